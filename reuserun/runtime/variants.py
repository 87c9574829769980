"""Variants: batches of what-if runs against a session's cached reference.

InferenceSession.run_variant evaluates one variant and restores the cache from a journal; this
module turns a caller's declaration of the edited positions into masks and runs batches, on the
session itself or on forks in parallel threads.
"""
from __future__ import annotations

import threading

import numpy as np

from reuserun.ir import InputError
from reuserun.kernels import region
from reuserun.runtime import options


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
            and next(iter(input_feed)) in getattr(sess, "_spatial_inputs", ())):
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
