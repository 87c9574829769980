"""Change detection: the checks a frame must pass, its diff against each input's reference frame,
the search for a shift, and, once the frame is accepted, writing it into the input caches.

Reading a frame (`Inputs.read`) writes nothing the next frame depends on: it fills per-run
scratch (change masks, a transposed copy of a channels-last frame) and returns a `Frame`. Only
`accept` (or `accept_variant`) makes the frame the session's."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reuserun.ir import InputError
from reuserun.kernels import region
from reuserun.runtime import variants
from reuserun.runtime.shifter import ShiftDetector
from reuserun.runtime.storage import aligned_zeros, slide_window

# shares of an input's positions, as divisors of its position count: a frame that changed on more
# than npix // SHIFT_SEARCH_PART positions may be a shift, and is searched for one; the last move
# still holds while it leaves under npix // STEADY_SHIFT_PART changed; an exact frame that changed
# on more than npix // COPY_WHOLE_PART is copied into its cache whole
SHIFT_SEARCH_PART = 4
STEADY_SHIFT_PART = 8
COPY_WHOLE_PART = 4


def check_feed_names(feed: dict, expected) -> None:
    unknown = sorted(set(feed) - expected)
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}; the model's inputs are {sorted(expected)}")
    missing = sorted(expected - set(feed))
    if missing:
        raise InputError(f"missing input {missing[0]!r}; the model's inputs are {sorted(expected)}")


def check_array(name: str, v, shape: tuple | None) -> None:
    """shape None: any shape (the first frame binds it)."""
    if not isinstance(v, np.ndarray):
        raise InputError(f"input {name!r} must be a numpy array, not {type(v).__name__}")
    if v.dtype != np.float32:
        raise InputError(f"input {name!r}: expected tensor(float) (float32), got {v.dtype}")
    if shape is not None and v.shape != shape:
        raise InputError(f"input {name!r}: expected shape {shape}, got {v.shape}; a session "
                         f"keeps one stream of one shape (make a new session for another)")


def shapes_of(feed: dict, names: list) -> dict:
    """The first frame's shapes, once its names, types and dtypes are checked."""
    check_feed_names(feed, set(names))
    for name in names:
        check_array(name, feed[name], None)
    return {name: tuple(feed[name].shape) for name in names}


def non_finite(name: str) -> InputError:
    return InputError(f"input {name!r} contains NaN or Inf; the frame was rejected and the session's "
                      f"state is unchanged (accept_nan=True takes such frames)")


@dataclass
class Frame:
    """One feed, checked and diffed but not yet accepted."""
    values: dict  # input name -> contiguous NCHW array
    # spatial input -> (change mask, changed count, shift or None); empty for a frame loaded whole
    diffs: dict = field(default_factory=dict)
    moved: tuple | None = None  # (input name, (dy, dx)) when the frame is the reference translated
    declared: dict = field(default_factory=dict)  # variants: input -> (pixels, their values, box)
    as_given: dict = field(default_factory=dict)  # channels-last inputs as the caller gave them


class Inputs:
    """The model's inputs between frames: each spatial input's reference frame, change masks and
    shift detector; plain inputs live in their Plain storage alone."""

    def __init__(self, names: list, input_shapes: dict, storage: dict, channels_last: frozenset,
                 stacks: set, threshold: float, accept_nan: bool):
        self.names = frozenset(names)
        self.specs = [(n, tuple(input_shapes[n]), storage[n]) for n in names]
        self.spatial = {n: storage[n] for n in names if storage[n].kind == "spatial"}
        self.threshold, self.accept_nan = threshold, accept_nan
        self.shift_ok = False  # whether frames are searched for shifts (the session decides)
        self._storage = storage
        self.channels_last = channels_last
        # a channels-last frame, transposed into a buffer of its own, reused frame after frame
        self._channels_first = {n: np.empty(storage[n].shape, np.float32) for n in channels_last}
        sp = self.spatial
        # change masks, kept apart from the cache until a frame is accepted
        self._diff_masks = {n: np.empty(s.npix, np.uint8) for n, s in sp.items()}
        # the reference frames in their own (C, H*W) layout, so diffing is a contiguous compare;
        # each lies in a buffer with the input cache's slack, so a shift slides it (slide)
        self._ref_bufs = {n: [aligned_zeros(s.C * s.npix + s.slack), 0] for n, s in sp.items()}
        self.references = {n: buf[:sp[n].C * sp[n].npix].reshape(sp[n].C, -1)
                           for n, (buf, _) in self._ref_bufs.items()}
        self.plane_masks = {n: np.zeros((storage[n].C, storage[n].npix), np.uint8) for n in stacks}
        self._detectors = {n: ShiftDetector(s.npix) for n, s in sp.items()}
        self.variant_pix = {n: np.empty(s.npix, np.int32) for n, s in sp.items()}
        self._variant_vals = {n: np.empty((s.npix, s.C), np.float32) for n, s in sp.items()}

    def reset(self) -> None:
        for det in self._detectors.values():
            det.reset()

    # --- reading a frame ----------------------------------------------------------------------
    def check(self, feed: dict) -> None:
        """The checks a frame must pass, touching nothing."""
        check_feed_names(feed, self.names)
        for name, shape, _ in self.specs:
            check_array(name, feed[name], shape)
            if not self.accept_nan and not np.isfinite(feed[name]).all():
                raise non_finite(name)

    def declared_masks(self, changed) -> dict | None:
        """run_variant's `changed`, as {input: (its per-run change mask, box bounding the marks)}."""
        return variants.declared_masks(self.spatial, changed, self._diff_masks)

    def read(self, feed: dict, whole: bool, search_shift: bool, threads: int, declared: dict | None = None) -> Frame:
        """Check every input, then diff each spatial one against its reference (not when whole:
        the frame is loaded whole); declared: a variant's declared masks, taken as given (only
        their positions are read). A shift detector's memory is put back if the frame is refused."""
        if feed.keys() != self.names:
            check_feed_names(feed, self.names)
        memory = [(det, det.last, det.misses, det.skip) for det in self._detectors.values()]
        try:
            return self._read(feed, whole, search_shift, threads, declared)
        except BaseException:
            for det, *kept in memory:
                det.last, det.misses, det.skip = kept
            raise

    def _read(self, feed, whole, search_shift, threads, declared) -> Frame:
        frame = Frame({})
        for name, shape, st in self.specs:
            v = feed[name]
            if type(v) is not np.ndarray or v.dtype != np.float32 or v.shape != shape:
                check_array(name, v, shape)  # an ndarray subclass passes; anything else raises
            if name in self.channels_last:  # the model's own leading Transpose, done here
                frame.as_given[name] = v
                v = self._channels_first[name]
                np.copyto(v, frame.as_given[name].transpose(0, 3, 1, 2))
            v = np.ascontiguousarray(v)
            if st.kind == "spatial" and not whole and declared and name in declared:
                bad = self._read_declared(frame, name, st, v, *declared[name])
            elif st.kind == "spatial" and not whole:
                bad = self._diff(frame, name, st, v, search_shift, threads)
            else:
                bad = not self.accept_nan and not region.all_finite(v.reshape(-1))
            if bad:
                raise non_finite(name)
            frame.values[name] = v
        return frame

    def _read_declared(self, frame: Frame, name: str, st, v, mask, bound) -> int:
        """A variant's declared positions: listed, gathered and checked in one pass."""
        pix, vals = self.variant_pix[name], self._variant_vals[name]
        nchanged, box, bad = region.take_marked(mask, st.W, *bound, v.reshape(st.C, -1), pix, vals) \
            if bound else (0, None, 0)
        frame.diffs[name] = (mask, nchanged, None)
        frame.declared[name] = (pix[:nchanged], vals[:nchanged], box)
        if name in self.plane_masks:
            self.plane_masks[name][...] = mask
        return bad

    def _diff(self, frame: Frame, name: str, st, v, search_shift: bool, threads: int) -> int:
        mask, f2, ref = self._diff_masks[name], v.reshape(st.C, -1), self.references[name]
        det = self._detectors[name] if search_shift else None
        moved = None
        # a steady stream: the last move, verified, without diffing the frame twice
        last = det.verify_last(f2, ref, st.H, st.W, mask, threads) if det else None
        if last is not None and not last[1] and last[0] < st.npix // STEADY_SHIFT_PART:
            moved, (nchanged, bad) = det.last, last
        if moved is None:
            nchanged, bad = region.diff_frame(f2, ref, self.threshold, mask, threads)
            found = None
            if det is not None and not bad and nchanged > st.npix // SHIFT_SEARCH_PART:
                found = det.search(f2, ref, st.C, st.H, st.W, nchanged, mask, threads)
            elif det is not None:
                det.last = None
            if found is not None:
                moved, nchanged = found
        if bad and self.accept_nan:  # a non-finite position counts as changed, every frame
            mask |= ~(np.isfinite(f2).all(axis=0) & np.isfinite(ref).all(axis=0))
            nchanged = int(np.count_nonzero(mask))
            bad = 0
        frame.diffs[name] = (mask, nchanged, moved)
        if moved is not None:
            frame.moved = (name, moved)
        if name in self.plane_masks and nchanged and not bad:
            region.diff_planes(f2, ref, self.threshold, self.plane_masks[name], threads)
        return bad

    # --- accepting a frame --------------------------------------------------------------------
    def accept(self, frame: Frame, full: bool, slides_input: bool, threads: int) -> bool:
        """Write the frame into the inputs' caches and masks; returns whether anything changed
        (always on a full frame). slides_input: the frame is a shift whose plan slides the input
        cache (slide() then writes it)."""
        changed = full
        for name, v in frame.values.items():
            st = self._storage[name]
            if st.kind == "plain":
                st.store(v, track=not full)
            elif full:
                self._load_whole(name, st, v, threads)
                st.mark_all()
            elif frame.diffs[name][2] is not None:  # moved
                if not slides_input:
                    self._load_whole(name, st, v, threads)
                self._take_mask(name, st, frame.diffs[name][0])
                st.rescan((0, st.H, 0, st.W))
            else:
                mask, nchanged, _ = frame.diffs[name]
                if nchanged > st.npix // COPY_WHOLE_PART and self.threshold == 0.0:
                    # exact mode: unmarked pixels hold the same bits in the frame and the
                    # reference, so copying the whole frame is the same as copying the marked
                    # pixels, and a plain copy is faster once many are marked
                    self._load_whole(name, st, v, threads)
                elif nchanged:
                    region.apply_frame(v.reshape(st.C, -1), self.references[name], st.buf, st.off,
                                       self.threshold, mask, threads)
                self._take_mask(name, st, mask)
                if nchanged:
                    st.rescan((0, st.H, 0, st.W))
                else:  # the diff wrote every byte of the mask: all zero, nothing to scan
                    st.nchanged, st.box = 0, None
                self._take_planes(name, st)
            changed = changed or st.changed
        return changed

    def accept_variant(self, frame: Frame, journal) -> None:
        """Write a variant's changed positions into the input caches, journaled; the reference
        frames stay as they are."""
        for name, v in frame.values.items():
            st = self._storage[name]
            if st.kind == "plain":
                journal.whole(st.arr)
                st.store(v, track=True)
                continue
            mask, nchanged, _ = frame.diffs[name]
            self._take_mask(name, st, mask)
            declared = frame.declared.get(name)
            if declared is not None:  # counted and bounded already
                st.nchanged, st.box = nchanged, declared[2]
            else:
                st.rescan((0, st.H, 0, st.W))
            if nchanged:
                if declared is not None:
                    pix, vals, _ = declared
                else:  # the marked pixels, found inside their box (a patch, not the whole image)
                    pix = self.variant_pix[name]
                    pix = pix[:region.to_pixels(mask, st.W, *st.box, pix)]
                    vals = self._variant_vals[name][:len(pix)]
                    region.gather_pixels(v.reshape(st.C, -1), pix, len(pix), vals)
                journal.rows(st.rows(), pix, len(pix))
                region.scatter_pixels(vals, pix, len(pix), st.buf, st.off)
            self._take_planes(name, st)

    def slide(self, name: str, d, v, threads: int) -> None:
        """The input's cache slid with the others: slide its reference frame alike (every
        channel plane moves by the same flat shift), then write the frame's marked pixels, the
        only ones where the moved reference does not hold the frame already, into both."""
        st = self._storage[name]
        view = slide_window(self._ref_bufs[name], st.slack, st.C * st.npix, d[0] * st.W + d[1])
        if view is not None:
            self.references[name] = view.reshape(st.C, -1)
        if st.nchanged:
            y0, y1, x0, x1 = st.box
            region.apply_frame(v.reshape(st.C, -1), self.references[name], st.buf, st.off, -1.0, st.mask,
                               threads, y0 * st.W + x0, (y1 - 1) * st.W + x1)

    def set_references(self, values: dict) -> None:
        """A frame computed elsewhere (onnxruntime, or without the caches) becomes the reference
        the next one is diffed against; the spatial caches stay behind it."""
        for name, v in values.items():
            st = self._storage[name]
            if st.kind == "spatial":
                np.copyto(self.references[name], v.reshape(st.C, -1))
            else:
                st.store(v, track=False)

    def load_references(self, threads: int) -> None:
        """Every spatial cache takes its reference frame whole (catching up after frames that
        were computed elsewhere)."""
        for name, ref in self.references.items():
            st = self._storage[name]
            st.load(ref.reshape(st.shape), threads)
            st.mark_all()

    def copy_pairs(self, twin: Inputs) -> list:
        """(twin's array, this one's) for every reference frame (a fork's copy)."""
        return [(twin.references[n], ref) for n, ref in self.references.items()]

    def _load_whole(self, name: str, st, v, threads: int) -> None:
        st.load(v, threads)
        np.copyto(self.references[name], v.reshape(st.C, -1))

    def _take_mask(self, name: str, st, mask) -> None:
        """The accepted change mask becomes the input's; its old mask is the next scratch."""
        st.mask, self._diff_masks[name] = mask, st.mask

    def _take_planes(self, name: str, st) -> None:
        if name in self.plane_masks:
            st.planes = self.plane_masks[name]
            st.plane_boxes = [region.scan(pl, st.W, *st.box)[1] if st.box else None for pl in st.planes]
