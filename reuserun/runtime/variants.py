"""Variants: batches of what-if runs against a session's cached reference.

InferenceSession.run_variant evaluates one variant and restores the cache from a journal; this
module turns a caller's declaration of the edited positions into masks and runs batches, on the
session itself or on forks in parallel threads.
"""
from __future__ import annotations

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


def run_batch(sess, output_names, input_feed: dict, changed, workers: int, progress) -> list[np.ndarray]:
    """sess.run_variant over B variants (axis 0 of every input); workers > 1 spreads them over
    that many forks of sess in threads. Returns each output with the B results along axis 0."""
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

    results = [None] * B
    done = 0
    if workers <= 1:
        for i in range(B):
            results[i] = one(sess, i)
            done += 1
            if progress:
                progress(done, B)
    else:
        from concurrent.futures import ThreadPoolExecutor
        forks = sess._variant_forks(workers)
        with ThreadPoolExecutor(workers) as pool:
            chunks = [pool.submit(lambda w: [(i, one(forks[w], i)) for i in range(w, B, workers)], w)
                      for w in range(workers)]
            for c in chunks:
                for i, r in c.result():
                    results[i] = r
                    done += 1
                    if progress:
                        progress(done, B)
    return [np.concatenate([r[j] for r in results], axis=0) for j in range(len(results[0]))]
