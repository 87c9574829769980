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
            try:
                bound = region.mark_boxes(mask, st.H, st.W, spec)
            except (ValueError, TypeError) as e:
                raise InputError(f"changed boxes for {name!r}: {e}") from None
        out[name] = (mask, bound)
    return out


def on_forks(sess, n: int, work, workers: int, progress=None) -> list:
    """work(session, i) for i in range(n), shared out in contiguous ranges (neighbouring
    variants reach neighbouring caches) between sess itself, in this thread, and workers - 1
    forks of it, each in its own thread, every one with sess.threads // workers kernel threads:
    the compiled steps run without the GIL, so the variants overlap. sess is held for the
    batch. Returns the results in order; progress(done, n) is called after each."""
    results = [None] * n
    done = [0]
    lock = threading.Lock()

    def share(s, lo, hi):
        for i in range(lo, hi):
            results[i] = work(s, i)
            if progress:
                with lock:
                    done[0] += 1
                    progress(done[0], n)

    workers = max(1, min(int(workers), n))
    if workers == 1:
        share(sess, 0, n)
        return results
    from concurrent.futures import ThreadPoolExecutor
    with sess._lock:
        forks = sess._variant_forks(workers - 1)
        threads = sess.threads
        sess.threads = max(1, threads // workers)
        try:
            with ThreadPoolExecutor(workers - 1) as pool:
                rest = [pool.submit(share, forks[w - 1], n * w // workers, n * (w + 1) // workers)
                        for w in range(1, workers)]
                share(sess, 0, n // workers)
                for f in rest:
                    f.result()
        finally:
            sess.threads = threads
    return results


def run_batch(sess, output_names, input_feed: dict, changed, workers: int, progress) -> list[np.ndarray]:
    """sess.run_variant over B variants (axis 0 of every input); workers > 1 spreads them over
    that many forks of sess in threads (on_forks). Returns each output with the B results
    along axis 0."""
    if not isinstance(input_feed, dict) or not input_feed:
        raise InputError("input_feed must be a dict {input name: batch of variants}")
    sizes = {len(v) for v in input_feed.values()}
    if len(sizes) != 1:
        raise InputError(f"every input needs the same number of variants, got {sorted(sizes)}")
    B = sizes.pop()
    if changed is not None and len(changed) != B:
        raise InputError(f"changed lists {len(changed)} declarations for {B} variants")

    def one(s, i):
        feed = {k: v[i:i + 1] for k, v in input_feed.items()}
        return s.run_variant(output_names, feed, None if changed is None else changed[i])

    results = on_forks(sess, B, one, workers, progress)
    return [np.concatenate([r[j] for r in results], axis=0) for j in range(len(results[0]))]
