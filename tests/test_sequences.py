"""Stateful property test: random graphs (squeeze-excite vectors, pooled vectors added back,
concats of differently changed branches, residual adds) driven through random frame
*sequences* (still frames, one-ulp edits, signed zeros, local edits, rows, changes everywhere,
shifts, resets, rejected frames, variants). After every step each policy's outputs equal the
dense session's bit for bit.

RR_SEQUENCES sets the number of sequences (CI: the default; more for a long hunt)."""
import os

import numpy as np
import pytest
from graphgen import random_graph
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import reuserun

pytestmark = pytest.mark.slow

SEQUENCES = int(os.environ.get("RR_SEQUENCES", 300))
STEPS = int(os.environ.get("RR_SEQUENCE_STEPS", 12))


class FrameSequences(RuleBasedStateMachine):
    """One random model; sessions of every policy and a dense reference see the same frames."""

    @initialize(data=st.data())
    def build(self, data):
        draw, self.model, self.rng, (c, h, w) = random_graph(data, channels=(1, 4), size=(4, 14), ops=(2, 8))
        self.shape = (1, c, h, w)
        tile = draw.int(1, 5)
        self.dense = reuserun.InferenceSession(self.model, policy="dense", threads=1)
        self.sessions = [reuserun.InferenceSession(self.model, policy=p, threads=t, tile=tile)
                         for p, t in (("auto", 1), ("auto", 2), ("tiles", 1), ("rects", 1), ("rect", 1))]
        self.sessions.append(reuserun.InferenceSession(self.model, policy="auto", threads=1, shift=False))
        self.cur = self.rng.standard_normal(self.shape).astype(np.float32)
        self.outs = None
        self._step(self.cur)

    def _step(self, frame):
        """Run every session on frame and keep the outputs for the invariant."""
        self.cur = frame
        ref = self.dense.run(None, {"x": frame})
        self.outs = [(s, s.run(None, {"x": frame})) for s in self.sessions]
        self.ref = ref

    @invariant()
    def bit_identical_to_dense(self):
        if self.outs is None:
            return
        for sess, outs in self.outs:
            for k, (a, b) in enumerate(zip(outs, self.ref)):
                assert a.tobytes() == b.tobytes(), (sess.policy_name, sess.threads, sess.shift, k)

    def _pos(self, data):
        _, c, h, w = self.shape
        return (data.draw(st.integers(0, c - 1)), data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1)))

    @rule()
    def still(self):
        self._step(self.cur.copy())

    @rule(data=st.data(), up=st.booleans())
    def one_ulp(self, data, up):
        f = self.cur.copy()
        c, y, x = self._pos(data)
        f[0, c, y, x] = np.nextafter(f[0, c, y, x], np.float32(np.inf if up else -np.inf))
        self._step(f)

    @rule(data=st.data())
    def signed_zero(self, data):
        """+0 then -0 at one value: equal as numbers, different in their bits."""
        f = self.cur.copy()
        c, y, x = self._pos(data)
        f[0, c, y, x] = 0.0
        self._step(f)
        self.bit_identical_to_dense()
        f = f.copy()
        f[0, c, y, x] = -0.0
        self._step(f)

    @rule(data=st.data())
    def local_edit(self, data):
        f = self.cur.copy()
        _, c, h, w = self.shape
        y0, x0 = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
        y1, x1 = min(h, y0 + data.draw(st.integers(1, 3))), min(w, x0 + data.draw(st.integers(1, 3)))
        channel = data.draw(st.sampled_from([None, 0]))
        sl = (0, slice(None) if channel is None else slice(0, 1), slice(y0, y1), slice(x0, x1))
        f[sl] = self.rng.standard_normal(f[sl].shape).astype(np.float32)
        self._step(f)

    @rule(data=st.data())
    def row(self, data):
        f = self.cur.copy()
        y = data.draw(st.integers(0, self.shape[2] - 1))
        f[0, :, y, :] += np.float32(0.5)
        self._step(f)

    @rule(scale=st.sampled_from([1e-3, 0.1]))
    def everywhere(self, scale):
        self._step((self.cur + np.float32(scale) * self.rng.standard_normal(self.shape)).astype(np.float32))

    @rule(share=st.sampled_from([0.6, 0.9]))
    def most(self, share):
        """Noise on most positions but not all (camera footage): the frames auto may choose to
        run densely by their measured cost (runtime/dense_choice.py)."""
        hit = self.rng.random(self.shape[2:]) < share
        f = self.cur + np.float32(0.1) * self.rng.standard_normal(self.shape).astype(np.float32) * hit
        self._step(f.astype(np.float32))

    @rule(dy=st.integers(-3, 3), dx=st.integers(-3, 3))
    def shift(self, dy, dx):
        """The frame translated, new content in the exposed band (what shift reuse looks for)."""
        f = np.roll(self.cur, (dy, dx), axis=(2, 3)).copy()
        if dy:
            band = slice(0, dy) if dy > 0 else slice(dy, None)
            f[0, :, band, :] = self.rng.standard_normal(f[0, :, band, :].shape)
        if dx:
            band = slice(0, dx) if dx > 0 else slice(dx, None)
            f[0, :, :, band] = self.rng.standard_normal(f[0, :, :, band].shape)
        self._step(f)

    @rule()
    def reset(self):
        for s in self.sessions:
            s.reset()
        self._step(self.cur.copy())

    @rule(data=st.data(), kind=st.sampled_from(["nan", "inf", "shape", "dtype"]))
    def rejected(self, data, kind):
        """A frame every session refuses; the next frame (the last one again) must still be
        bit-identical, so the refusal left no trace."""
        f = self.cur.copy()
        if kind in ("nan", "inf"):
            c, y, x = self._pos(data)
            f[0, c, y, x] = np.nan if kind == "nan" else -np.inf
        elif kind == "shape":
            f = f[..., :-1] if f.shape[3] > 1 else np.concatenate([f, f], axis=3)
        else:
            f = f.astype(np.float64)
        for s in self.sessions:
            with pytest.raises(reuserun.InputError):
                s.run(None, {"x": f})
        self._step(self.cur.copy())

    @precondition(lambda self: self.outs is not None)
    @rule(data=st.data(), declared=st.booleans())
    def variant(self, data, declared):
        """A variant of the reference equals a dense run on it, and leaves every cache as it was
        (checked by the still frame after it)."""
        f = self.cur.copy()
        _, c, h, w = self.shape
        y0, x0 = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
        y1, x1 = min(h, y0 + data.draw(st.integers(1, 4))), min(w, x0 + data.draw(st.integers(1, 4)))
        f[0, :, y0:y1, x0:x1] = self.rng.standard_normal((c, y1 - y0, x1 - x0)).astype(np.float32)
        want = reuserun.InferenceSession(self.model, policy="dense", threads=1).run(None, {"x": f})
        for s in self.sessions:
            got = s.run_variant(None, {"x": f}, changed=[(y0, y1, x0, x1)] if declared else None)
            for k, (a, b) in enumerate(zip(got, want)):
                assert a.tobytes() == b.tobytes(), ("variant", s.policy_name, declared, k)
        self._step(self.cur.copy())


FrameSequences.TestCase.settings = settings(
    max_examples=SEQUENCES, stateful_step_count=STEPS)
test_frame_sequences = FrameSequences.TestCase
