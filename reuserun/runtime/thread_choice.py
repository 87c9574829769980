"""How many of a session's threads a frame uses: all of them, unless frames have been measured
faster on one. On a machine where another process keeps a core busy, every parallel step waits at
its end for the thread that is not running, and two threads can take longer than one. The other
choice is tried again now and then, a few frames in a row, so the threads come back once the core
is free; the more clearly it lost, the longer until the next try. Each choice is judged by the
median of its recent frames (a busy machine makes single frames vary by twice). The thread count
never changes a result's bits: each output element is computed in the same order whichever
thread computes it."""
from __future__ import annotations

from collections import deque
from statistics import median

# frames between two tries of the other choice, at first and at most
PROBE_FIRST, PROBE_MAX = 16, 512
# frames in a row that a try runs on the other choice
PROBE_FRAMES = 3
# recent frames that judge the current choice
KEPT = 7
# the other choice wins when its median time per dense frame is below this share of the current one's
MARGIN = 0.9
# frames that computed less than this share of the dense MACs say little about a thread count
MIN_FRACTION = 0.25


class ThreadChoice:
    def __init__(self, threads: int):
        """threads: the session's thread count (the choice is between it and 1)."""
        self.threads = threads
        self.current = threads
        self.recent: deque = deque(maxlen=KEPT)  # seconds per dense frame of the current choice
        self.trial: list = []  # the same, for the frames of a try of the other choice
        self.trying = 0  # frames of the try still to run
        self.interval = PROBE_FIRST
        self.since = 0  # frames since the last try began
        self.tried = False  # whether the other choice has been tried yet

    def is_try(self, threads: int) -> bool:
        """Whether a frame on `threads` was a try of the other choice (its time says nothing of
        the current one's costs)."""
        return threads != self.current

    @property
    def other(self) -> int:
        return 1 if self.current == self.threads else self.threads

    def pick(self) -> int:
        """The thread count for the next frame."""
        if self.threads <= 1:
            return self.threads
        if self.trying:
            self.trying -= 1
            return self.other
        if self.trial:  # a try whose last frames said nothing (still or light frames)
            self._decide()
        self.since += 1
        # the first try as soon as the current choice has a figure, the next ones further apart
        if len(self.recent) >= 2 and (self.since >= self.interval or not self.tried):
            self.tried = True
            self.trying, self.trial, self.since = PROBE_FRAMES - 1, [], 0
            return self.other
        return self.current

    def note(self, threads: int, seconds: float, fraction: float) -> None:
        """A frame computed on `threads` took `seconds` for `fraction` of the dense MACs."""
        if self.threads <= 1 or fraction < MIN_FRACTION or seconds <= 0.0:
            return
        per_dense = seconds / fraction
        if threads == self.current:
            self.recent.append(per_dense)
            return
        self.trial.append(per_dense)
        if not self.trying:
            self._decide()

    def _decide(self) -> None:
        """After a try of the other choice: switch when it was clearly faster; else try it
        again later, the later the more it lost."""
        trial, self.trial = self.trial, []
        mine, theirs = median(self.recent), median(trial)
        if theirs < MARGIN * mine:  # the try's frames are the new choice's first figures
            self.current, self.interval = self.other, PROBE_FIRST
            self.recent = deque(trial, maxlen=KEPT)
        elif theirs > mine / MARGIN:
            self.interval = min(PROBE_MAX, 2 * self.interval)
