"""An undo log for one run: the old values of everything the run overwrites.

A variant (InferenceSession.run_variant) runs through the normal incremental path with every
step journaling, reads its outputs, then restores the journal in reverse order, so the cache is
bit for bit what it was. What is saved is what the variant recomputes, so a variant costs its
change, not a copy of the cache.
"""
from __future__ import annotations

import numpy as np


class Journal:
    def __init__(self):
        self._log: list = []

    def rows(self, arr2d: np.ndarray, pix: np.ndarray, n: int) -> None:
        """Save rows pix[:n] of an (npix, row) view before they are overwritten."""
        if n <= 0:
            return
        if n == arr2d.shape[0]:
            self.whole(arr2d)
            return
        idx = pix[:n].copy()
        self._log.append((arr2d, idx, arr2d[idx]))

    def whole(self, arr: np.ndarray) -> None:
        self._log.append((arr, None, arr.copy()))

    def restore(self) -> None:
        """Put every saved value back, latest first (a later save may hold an earlier write)."""
        for arr, idx, old in reversed(self._log):
            if idx is None:
                arr[...] = old
            else:
                arr[idx] = old
        self._log.clear()

    @property
    def nbytes(self) -> int:
        return sum(old.nbytes + (0 if idx is None else idx.nbytes) for _, idx, old in self._log)
