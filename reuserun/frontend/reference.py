"""numpy stand-ins for what ONNX defines and numpy lacks: erf (the numpy path of the GELU
activation), and the ops that draw random numbers, which constant folding must leave alone."""
from __future__ import annotations

import numpy as np


def erf(x: np.ndarray) -> np.ndarray:
    """erf within 4e-7 relative: Numerical Recipes' erfc (fractional error below 1.2e-7) in
    float32, in place, and a Taylor series in float64 below 0.5, where 1 - erfc would lose the
    small values' digits."""
    x = np.asarray(x, np.float32)
    a = np.abs(x)
    t = np.float32(1) / (np.float32(1) + np.float32(0.5) * a)
    p = np.full_like(t, 0.17087277)
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196,
              1.00002368, -1.26551223):
        p *= t
        p += np.float32(c)
    p -= a * a
    np.exp(p, out=p)
    p *= t  # erfc(|x|)
    np.subtract(np.float32(1), p, out=p)
    np.copysign(p, x, out=p)
    small = a < 0.5
    if small.any():
        xs = x[small].astype(np.float64)
        x2 = xs * xs
        p[small] = xs * (1.1283791670955126 + x2 * (-0.37612638903183754 + x2 * (0.11283791670955126 + x2 * (
            -0.026866170645131252 + x2 * (0.005223977625442188 + x2 * -0.0008548327023450852)))))
    return p


# folding these would freeze one random draw into the model
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Multinomial", "Bernoulli"}
