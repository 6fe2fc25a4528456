"""Release noise: Laplace noise that is both differential privacy and CKKS noise flooding.

Each released value gets Laplace noise of scale ``max(sensitivity / epsilon, floor)``:

* ``sensitivity / epsilon`` makes the release epsilon-DP for one privacy unit (L1 sensitivity
  from the declared computation and the view's clipping bounds);
* ``floor = 2^flood_bits × error_bound`` floods the approximation error of CKKS. A CKKS
  decryption is ``m + e`` where ``e`` depends on the secret key; publishing it exactly is what
  the Li–Micciancio attack needs. ``error_bound`` over-estimates ``|e|`` (measured margins in
  docs/encryption.md), so the noise is at least ``2^flood_bits`` times larger than the error.

A larger scale than DP needs only strengthens the guarantee, so the charge stays ``epsilon``.
Sampling is OpenDP's Laplace on floats (discretized sampling, immune to the floating-point
attacks on naive ``numpy`` Laplace noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from govern.errors import Unsupported

# Conservative relative CKKS error per row at scale 2^40, N = 8192 (see docs/encryption.md):
# additions and rotations only, and after one multiplication (rescaling error dominates).
ERROR_PER_ROW = {0: 2.0 ** -30, 1: 2.0 ** -22}


def error_bound(rows: int, magnitude: float, depth: int) -> float:
    """An upper bound on the CKKS error of an aggregate over ``rows`` rows whose per-row
    contribution is at most ``magnitude`` (``depth``: multiplications on the way)."""
    return max(rows, 1) * max(magnitude, 1.0) * ERROR_PER_ROW[min(depth, 1)]


def noise_scale(sensitivity: float, epsilon: float, error: float, flood_bits: int) -> float:
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError("epsilon must be positive")
    return max(sensitivity / epsilon, error * 2.0 ** flood_bits)


def laplace(values: Sequence[float], scale: float) -> list[float]:
    """``values`` plus independent Laplace(scale) noise, via OpenDP."""
    try:
        import opendp.prelude as dp
    except ImportError:  # pragma: no cover - a dependency of the he extra
        raise Unsupported("releases need OpenDP: pip install 'govern[he]'") from None
    dp.enable_features("contrib")  # floating-point Laplace is behind OpenDP's "contrib" flag
    mechanism = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=float, nan=False)),
                                  dp.l1_distance(T=float), scale=float(scale))
    return [float(v) for v in mechanism([float(v) for v in values])]
