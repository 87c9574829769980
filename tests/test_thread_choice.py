"""The measured choice between a session's threads and one (runtime/thread_choice.py), driven
with made-up frame times: a busy neighbour makes two threads slower than one, and leaves."""
import numpy as np

import reuserun
from reuserun.runtime.thread_choice import PROBE_FIRST, PROBE_FRAMES, PROBE_MAX, ThreadChoice
from reuserun.zoo import resnet_like


def drive(choice: ThreadChoice, seconds_for, frames: int, fraction: float = 1.0) -> list[int]:
    """Run `frames` frames, each taking seconds_for(threads); the thread counts picked."""
    picked = []
    for _ in range(frames):
        t = choice.pick()
        picked.append(t)
        choice.note(t, seconds_for(t), fraction)
    return picked


def test_keeps_its_threads_when_they_are_faster_and_tries_one_ever_more_rarely():
    choice = ThreadChoice(2)
    picked = drive(choice, {2: 1.0, 1: 1.9}.get, 3000)
    tries = [i for i, t in enumerate(picked) if t == 1 and picked[i - 1] != 1]
    assert picked[0] == 2 and choice.current == 2
    assert len(tries) < 12 and picked.count(1) == PROBE_FRAMES * len(tries)  # tries of a few frames each
    gaps = np.diff(tries)
    assert gaps[0] >= PROBE_FIRST and gaps.max() <= PROBE_MAX + PROBE_FRAMES and np.all(np.diff(gaps) >= 0)


def test_a_busy_core_moves_it_to_one_thread_and_back_once_the_core_is_free():
    choice = ThreadChoice(2)
    busy = drive(choice, {2: 2.0, 1: 1.2}.get, 200)
    assert choice.current == 1 and busy[-100:].count(1) > 90
    free = drive(choice, {2: 0.6, 1: 1.2}.get, 200)
    assert choice.current == 2 and free[-100:].count(2) > 90


def test_close_times_change_nothing_and_small_frames_say_nothing():
    choice = ThreadChoice(2)
    drive(choice, {2: 1.0, 1: 0.95}.get, 500)  # within the margin
    assert choice.current == 2
    choice = ThreadChoice(2)
    drive(choice, {2: 5.0, 1: 1.0}.get, 500, fraction=0.01)  # overhead-bound frames
    assert choice.current == 2 and not choice.recent and not choice.trial


def test_a_try_of_still_frames_is_judged_by_what_it_measured():
    choice = ThreadChoice(2)
    drive(choice, {2: 2.0, 1: 1.0}.get, 3)  # two frames give the current choice a figure, the third tries one
    assert choice.trying == PROBE_FRAMES - 1
    for _ in range(PROBE_FRAMES - 1):  # the rest of the try: frames that computed nothing
        choice.note(choice.pick(), 0.001, 0.0)
    choice.pick()
    assert choice.current == 1 and not choice.trying and not choice.trial


def test_one_thread_has_no_choice():
    choice = ThreadChoice(1)
    assert set(drive(choice, {1: 1.0}.get, 50)) == {1}


def test_sessions_report_the_threads_of_each_frame():
    model = resnet_like(32)
    sess = reuserun.InferenceSession(model, threads=2)
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(0)
    used = set()
    for _ in range(PROBE_FIRST + 4):
        sess.run(None, {name: rng.random((1, 3, 32, 32), dtype=np.float32)})
        used.add(sess.stats["threads"])
    assert used <= {1, 2} and 2 in used
