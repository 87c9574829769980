"""Whether an exact frame runs densely or incrementally, from this session's own timings.

A frame whose change reaches nearly every position (camera footage: compression and sensor noise
touch almost every pixel, and a fifth of a downscaled frame's pixels reach almost all of a
network's MACs) costs more incrementally, planning each step and comparing every result with its
cache, than a dense run that does neither. Both give the same bits, so the choice is only about
time. It is measured, not guessed from MACs: a squeeze-excite net reaches 77% of its MACs from a
1% object and still runs that frame in a fraction of a dense one.

Candidates are frames that change at least half their input, or at least as much as an
incremental frame that reached WIDE_MACS of the dense MACs. Until WARMUP dense frames are
measured (a stream's first frame left out: it pays one-time costs), a candidate runs densely to
measure; then the dense cost is the least of the last DENSE_KEPT dense frames' times (on a
shared machine a frame's time is often a third above its cost, seldom below; and the first
dense frames after a stream's first, or after a program is built, run on cold caches). An incremental frame that took at
least that long marks its changed fraction as heavy, and candidates that change at least as much
run densely. Every PROBE-th candidate takes the other path, to measure again: an incremental one
faster than the dense cost clears the mark."""
from __future__ import annotations

from collections import deque

LARGE_CHANGE = 0.5
# an incremental frame that computed this share of the dense MACs makes frames that change as
# much candidates for a dense run
WIDE_MACS = 0.75
PROBE = 16
# dense frames measured before the measure is trusted: the first after a stream's first frame
# still pays for caches and pages touched for the first time
WARMUP = 2
DENSE_KEPT = 5


class DenseChoice:
    def __init__(self):
        self.dense_times = deque(maxlen=DENSE_KEPT)  # the last dense frames' seconds
        self.dense_count = 0
        self.wide_from = None   # the least changed fraction seen to reach WIDE_MACS incrementally
        self.heavy_from = None  # the least changed fraction seen to cost a dense frame or more
        self.since_probe = 0

    def reset(self) -> None:
        """A new scene: its changes are measured afresh (the dense cost stays)."""
        self.wide_from = self.heavy_from = None
        self.since_probe = 0

    def dense(self, changed: float) -> bool:
        """Whether a frame that changed this fraction of its input should run densely (asked
        once per frame: every PROBE-th candidate takes the other path)."""
        if changed < LARGE_CHANGE and (self.wide_from is None or changed < self.wide_from):
            return False
        if self.dense_count < WARMUP:
            return True
        heavy = self.heavy_from is not None and changed >= self.heavy_from
        self.since_probe += 1
        probe = self.since_probe >= PROBE
        if probe:
            self.since_probe = 0
        return heavy != probe

    def note(self, changed: float, seconds: float, full: bool, mac_fraction: float = 1.0) -> None:
        """After a frame (not a stream's first) that changed this fraction and took this long,
        densely or not (then computing mac_fraction of the dense MACs)."""
        if full:
            self.dense_times.append(seconds)
            self.dense_count += 1
            return
        if changed <= 0.0:
            return
        if mac_fraction >= WIDE_MACS:
            self.wide_from = changed if self.wide_from is None else min(self.wide_from, changed)
        if not self.dense_times:
            return
        if seconds >= min(self.dense_times):
            self.heavy_from = changed if self.heavy_from is None else min(self.heavy_from, changed)
        elif self.heavy_from is not None and changed >= self.heavy_from:
            self.heavy_from = None
