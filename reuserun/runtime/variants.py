"""Variants: what-if runs against a session's cached reference.

A variant is computed incrementally with every step recording what it overwrites in a journal,
which then puts the cache back (`Variants.run`); declared boxes of one spatial input run many
variants in one native loop (`Variants.declared_batch`). This module also turns a caller's
declaration of the edited positions into masks and runs batches, on the session itself or on
forks in parallel threads.
"""
from __future__ import annotations

import threading

import numpy as np

from reuserun.ir import InputError
from reuserun.kernels import region
from reuserun.runtime import driver, options
from reuserun.runtime.journal import Journal


class Variants:
    """A session's variant runs: inputs (runtime/inputs.py) and executor (runtime/executor.py)
    are the session's parts; the journal and the native loops are kept between variants."""

    def __init__(self, inputs, executor):
        self.inputs, self.executor = inputs, executor
        self.journal = Journal()  # the undo log, its scratch kept between variants
        self._runners: dict = {}  # output names -> the native loop over declared variants, or None

    def run(self, frame, names: list, threads: int) -> tuple[list, list]:
        """One variant (an inputs.Frame read against the reference): its outputs named, and the
        positions each step computed; the cache is put back as it was."""
        journal, ex = self.journal, self.executor
        slow = ex.slow_steps()  # the compiled steps get the journal from the driver
        try:
            for step in slow:
                step.journal = journal
            self.inputs.accept_variant(frame, journal)
            computed = ex.run_incremental(threads, journal)
            outs = [np.array(ex.storage[n].logical(), dtype=np.float32, copy=True, order="C") for n in names]
        finally:
            for step in slow:
                step.journal = None
            journal.restore()
        return outs, computed

    def declared_batch(self, names: list, boxes: list, frames, fill: float, first: int, threads: int,
                       before_run):
        """Variants of the one spatial input whose edits are declared boxes, in one native loop
        (driver.DeclaredRunner), or None where the program cannot (InferenceSession.declared_batch
        says when); before_run() is called once the batch is checked. Returns (outputs (B, ...),
        positions computed per variant and step, the input's name and the last variant's marks)
        or raises for a variant holding NaN or Inf."""
        runner = self._runners.get(tuple(names), False)
        if runner is False:
            runner = self._runners[tuple(names)] = self._runner(names)
        if runner is None:
            return None
        name, x = next(iter(self.inputs.spatial.items()))
        B = len(boxes)
        flat, starts = [], [0]
        for spec in boxes:
            flat += box_list(name, spec, x.H, x.W)
            starts.append(len(flat))
        shape = self.inputs.specs[0][1]
        if frames is not None:
            if not isinstance(frames, np.ndarray) or frames.shape != (B, *shape[1:]):
                raise InputError(f"variants of {name!r} must be an array of shape {(B, *shape[1:])}, "
                                 f"got {np.shape(frames)}")
            frames = np.ascontiguousarray(frames, np.float32).reshape(B, x.C, x.npix)
        storage = self.executor.storage
        results = [np.empty((B, *storage[n].shape[1:]), np.float32) for n in names]
        counts = np.zeros((B, len(self.executor.program)), np.int64)
        before_run()
        bad = runner.run(threads, np.array(flat, np.int32).reshape(-1, 4), np.array(starts, np.int64),
                         frames, fill, [r.reshape(B, -1) for r in results], counts)
        if bad >= 0:
            raise InputError(f"variant {first + bad} holds NaN or Inf in its declared boxes; the batch was rejected")
        return results, counts, name, runner.marked

    def _runner(self, names: list):
        """The native loop over declared variants for these outputs, or None: every step must
        have a native path, with no per-channel vector inputs, the model one spatial input (no
        plane masks, not channels-last) and the outputs plain float32 tensors."""
        ins, ex = self.inputs, self.executor
        fast = ex.fast_steps()
        if (len(ins.specs) != 1 or len(ins.spatial) != 1 or ins.plane_masks or ins.channels_last
                or any(f is None or step.vector_inputs for f, step in zip(fast, ex.program))
                or any(ex.storage[n].kind != "plain" or ex.storage[n].arr.dtype != np.float32 for n in names)):
            return None
        name, x = next(iter(ins.spatial.items()))
        # its own mask (the per-run masks swap with the input's); the pixel list is the
        # single-variant path's, both used under the session's lock
        return driver.DeclaredRunner(fast, [step.thr for step in ex.program], x, self.journal,
                                     np.zeros(x.npix, np.uint8), ins.variant_pix[name],
                                     [ex.storage[n].arr.reshape(-1) for n in names])


class ForkPool:
    """A session's forks for parallel variants, kept between batches, with the version of the
    session's caches they were last copied at."""

    def __init__(self):
        self.version = None
        self.forks: list = []

    def take(self, make_fork, k: int, version: int) -> tuple[list, list]:
        """k forks (made with make_fork() where there are fewer), and those of them whose cache is
        stale: a frame changed the session's since they were copied (the caller copies them,
        then calls refreshed; until then they count as stale)."""
        stale = list(self.forks) if self.version != version else []
        self.forks += [make_fork() for _ in range(k - len(self.forks))]
        if not stale:
            self.version = version
        return self.forks[:k], [f for f in stale if f in self.forks[:k]]

    def refreshed(self, version: int) -> None:
        self.version = version


def declared_masks(spatial: dict, changed, scratch: dict) -> dict | None:
    """{input name: ((H*W,) uint8 mask, box holding its marks)} from run_variant's `changed`: a
    mask or a list of boxes (y0, y1, x0, x1) for the one spatial input, or a dict of those by
    input name. Each mask is written into scratch[name] (the session's per-run change mask); the
    box (the whole grid for a mask; None when the boxes cover nothing) bounds the scans that
    follow."""
    if changed is None:
        return None
    if not isinstance(changed, dict):
        if len(spatial) != 1:
            raise InputError("changed must be a dict {input name: mask or boxes} for this model")
        changed = {next(iter(spatial)): changed}
    out = {}
    for name, spec in changed.items():
        if name not in spatial:
            raise InputError(f"changed names {name!r}, which is not a spatial input ({sorted(spatial)})")
        st = spatial[name]
        mask = scratch[name]
        if isinstance(spec, np.ndarray) and spec.ndim == 2:
            if spec.shape != (st.H, st.W):
                raise InputError(f"changed mask for {name!r} must have shape {(st.H, st.W)}, got {spec.shape}")
            np.not_equal(spec, 0, out=mask.reshape(st.H, st.W))
            bound = (0, st.H, 0, st.W)
        else:
            bound = region.mark_boxes(mask, st.H, st.W, box_list(name, spec, st.H, st.W))
        out[name] = (mask, bound)
    return out


def box_list(name: str, spec, H: int, W: int) -> list[tuple[int, int, int, int]]:
    """The non-empty boxes (y0, y1, x0, x1) of a declaration of input `name`, as ints; an
    InputError for a box that is not four integers or lies outside the H x W grid."""
    out = []
    for box in spec:
        try:
            y0, y1, x0, x1 = (int(v) for v in box)
        except (TypeError, ValueError):
            raise InputError(f"changed boxes for {name!r}: {box!r} is not (y0, y1, x0, x1) integers") from None
        if not (0 <= y0 <= y1 <= H and 0 <= x0 <= x1 <= W):
            raise InputError(f"changed boxes for {name!r}: {tuple(box)} lies outside the {H}x{W} grid")
        if y0 < y1 and x0 < x1:
            out.append((y0, y1, x0, x1))
    return out


def on_forks(sess, n: int, run_share, workers: int, progress=None, chunk: int = 16) -> list:
    """run_share(session, lo, hi) -> the results of items lo..hi-1, for range(n) in chunks of
    consecutive items (neighbouring variants reach neighbouring caches) that sess itself, in
    this thread, and workers - 1 forks of it, each in its own thread, take in turn as they
    finish the last (windows of a map cost unequal amounts), every one with sess.threads //
    workers kernel threads: the compiled steps run without the GIL, so the variants overlap.
    sess is held for the batch. progress(done, n) is called after each chunk. Returns the
    results in order."""
    results = [None] * n
    state = {"next": 0, "done": 0}
    lock = threading.Lock()

    def work(s):
        while True:
            with lock:
                lo = state["next"]
                hi = state["next"] = min(n, lo + chunk)
            if lo >= n:
                return
            results[lo:hi] = run_share(s, lo, hi)
            if progress:
                with lock:
                    state["done"] += hi - lo
                    progress(state["done"], n)

    chunk = max(1, min(chunk, n // (2 * max(1, int(workers)))))  # a small batch still spreads out
    workers = max(1, min(int(workers), -(-n // chunk)))
    if workers == 1:
        work(sess)
        return results
    from concurrent.futures import ThreadPoolExecutor
    with sess.lock:
        forks, stale = sess.variant_forks(workers - 1)
        # every thread copies a share of the stale forks' caches, then all start at once
        ready = threading.Barrier(workers)

        def start(s, part):
            try:
                for f in stale:
                    sess.copy_cache_to(f, part, workers)
            except BaseException:
                ready.abort()
                raise
            ready.wait()
            work(s)

        threads = sess.threads
        sess.threads = max(1, threads // workers)  # each thread's share, this session's and every fork's
        for f in forks:
            f.threads = sess.threads
        try:
            with ThreadPoolExecutor(workers - 1) as pool:
                rest = [pool.submit(start, f, w + 1) for w, f in enumerate(forks)]
                start(sess, 0)
                for f in rest:
                    f.result()
            if stale:
                sess.forks_refreshed()
        finally:
            sess.threads = threads
    return results


def declared_share(names, boxes: list, frames=None, base=None, fill: float = 0.0):
    """A run_share for on_forks over variants whose edits are declared boxes: boxes[i] is
    variant i's list of boxes; the variants are frames (B, C, H, W), or, with frames None,
    base with variant i's boxes set to fill. A share goes through the session's native loop
    (InferenceSession.declared_batch), else one run_variant each. Each result: (the
    variant's outputs, batch axis kept; the positions each step computed)."""
    def run_share(s, lo, hi):
        got = s.declared_batch(names, boxes[lo:hi], None if frames is None else frames[lo:hi], fill, lo)
        if got is not None:
            arrays, counts = got
            return [([r[i:i + 1] for r in arrays], counts[i]) for i in range(hi - lo)]
        out, name = [], s.get_inputs()[0].name
        if frames is not None:
            for i in range(lo, hi):
                out.append((s.run_variant(names, {name: frames[i:i + 1]}, changed=boxes[i]), s.last_counts))
            return out
        # each variant's boxes filled in one image: a variant reads only the boxes it declares,
        # so the earlier variants' fills need no putting back
        image = base.copy()
        channels_last = name in s.channels_last_inputs
        for i in range(lo, hi):
            for y0, y1, x0, x1 in boxes[i]:
                if channels_last:
                    image[:, y0:y1, x0:x1, :] = fill
                else:
                    image[..., y0:y1, x0:x1] = fill
            out.append((s.run_variant(names, {name: image}, changed=boxes[i]), s.last_counts))
        return out
    return run_share


def run_batch(sess, output_names, input_feed: dict, changed, workers: int, progress) -> list[np.ndarray]:
    """sess.run_variant over B variants (axis 0 of every input); workers > 1 spreads them over
    that many forks of sess in threads (on_forks). Variants declared as boxes go through the
    native loop where the session allows it. Returns each output with the B results along
    axis 0."""
    if not isinstance(input_feed, dict) or not input_feed:
        raise InputError("input_feed must be a dict {input name: batch of variants}")
    for name, v in input_feed.items():
        if not isinstance(v, np.ndarray) or v.ndim == 0:
            raise InputError(f"input {name!r} must be a numpy array holding the variants along axis 0")
    workers = options.workers(workers)
    sizes = {len(v) for v in input_feed.values()}
    if len(sizes) != 1:
        raise InputError(f"every input needs the same number of variants, got {sorted(sizes)}")
    B = sizes.pop()
    if B == 0:
        raise InputError("run_variants needs at least one variant (axis 0 of the inputs is empty)")
    if changed is not None and len(changed) != B:
        raise InputError(f"changed lists {len(changed)} declarations for {B} variants")
    if (len(input_feed) == 1 and changed is not None and all(isinstance(c, (list, tuple)) for c in changed)
            and next(iter(input_feed)) in sess.spatial_inputs):
        frames = next(iter(input_feed.values()))
        if isinstance(frames, np.ndarray) and frames.dtype == np.float32:
            results = on_forks(sess, B, declared_share(output_names, [list(c) for c in changed], frames),
                               workers, progress)
            return [np.concatenate([r[0][j] for r in results], axis=0) for j in range(len(results[0][0]))]

    def run_share(s, lo, hi):
        return [s.run_variant(output_names, {k: v[i:i + 1] for k, v in input_feed.items()},
                              None if changed is None else changed[i]) for i in range(lo, hi)]

    results = on_forks(sess, B, run_share, workers, progress)
    return [np.concatenate([r[j] for r in results], axis=0) for j in range(len(results[0]))]
