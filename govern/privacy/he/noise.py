"""Release noise: Laplace noise that is both differential privacy and CKKS noise flooding.

Each released value gets Laplace noise of scale ``max(sensitivity / epsilon, floor)``:

* ``sensitivity / epsilon`` makes the release epsilon-DP for one privacy unit (L1 sensitivity
  from the declared computation and the view's clipping bounds);
* ``floor = 2^flood_bits × error_bound`` floods the approximation error of CKKS. A CKKS
  decryption is ``m + e`` where ``e`` depends on the secret key; publishing it exactly is what
  the Li–Micciancio attack needs. With Laplace noise of scale ``b``, two keys whose errors differ
  by at most ``2·error_bound`` give output densities within a factor ``exp(2·error_bound / b)``:
  at ``b ≥ 2^12 × error_bound`` one release tells at most 2^-11 nats about the error, and so
  about the key (the derivation is in docs/encryption.md). ``error_bound`` is the *measured*
  worst case with a small margin, not a loose over-estimate: the floor is negligible for sums,
  counts and means (depth 0), and DP's own scale decides a depth-1 release (dot, linear,
  grouped) while the view has fewer than ``1024 · contributions / epsilon`` rows.

A larger scale than DP needs only strengthens the guarantee, so the charge stays ``epsilon``.
Sampling is OpenDP's Laplace on floats (discretized sampling, immune to the floating-point
attacks on naive ``numpy`` Laplace noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from govern.errors import Unsupported

# CKKS error at scale 2^40, N = 8192, measured on worst-case data (every slot at its bound) and
# on uniform data, 1 to 16 ciphertexts per column (docs/encryption.md#the-ckks-error-bound):
# - additions only (depth 0): the error comes from encryption, encoding and the key switches of
#   rotate-and-sum, not from the values: ≤ 3·10⁻⁶ whatever the rows and magnitudes;
# - one multiplication (depth 1): the rescaling error is relative to the aggregate, at most
#   1.34·10⁻⁷ × rows × per-row magnitude (2^-22.8), reached when every slot is at its bound.
# The bound keeps a margin over the worst measurement: 5× at depth 0 (2^-16 per √chunk),
# 1.8× at depth 1 (2^-22 per row and unit of magnitude).
ERROR_PER_ROW = {0: 0.0, 1: 2.0 ** -22}
ERROR_FIXED = 2.0 ** -16
SLOTS = 4096


def error_bound(rows: int, magnitude: float, depth: int) -> float:
    """An upper bound on the CKKS error of an aggregate over ``rows`` rows (the view's rows, a
    public number) whose per-row contribution is at most ``magnitude`` (``depth``:
    multiplications on the way). Padding slots hold zeros and add no magnitude."""
    chunks = max(1, -(-max(rows, 1) // SLOTS))
    return max(rows, 1) * max(magnitude, 1.0) * ERROR_PER_ROW[min(depth, 1)] + ERROR_FIXED * math.sqrt(chunks)


def noise_scale(sensitivity: float, epsilon: float, error: float, flood_bits: int) -> float:
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError("epsilon must be positive")
    return max(sensitivity / epsilon, error * 2.0 ** flood_bits)


def laplace(values: Sequence[float], scale: float) -> list[float]:
    """``values`` plus independent Laplace(scale) noise, via OpenDP."""
    try:  # the submodules, not opendp.prelude: that one also imports scikit-learn (seconds)
        from opendp.domains import atom_domain, vector_domain
        from opendp.measurements import make_laplace
        from opendp.metrics import l1_distance
        from opendp.mod import enable_features
    except ImportError:  # pragma: no cover - a dependency of the he extra
        raise Unsupported("releases need OpenDP: pip install 'govern[he]'") from None
    enable_features("contrib")  # floating-point Laplace is behind OpenDP's "contrib" flag
    mechanism = make_laplace(vector_domain(atom_domain(T=float, nan=False)), l1_distance(T=float),
                             scale=float(scale))
    return [float(v) for v in mechanism([float(v) for v in values])]


def threshold(counts: Sequence[float], k: int, contributions: int, epsilon: float) -> list[bool]:
    """Which of ``counts`` fall below ``k`` after Laplace noise: the ``he_min_rows`` rule as an
    epsilon-DP mechanism, so it answers no exact question about anyone.

    The counts are of disjoint groups (a row lies in one group; an ungrouped release has one
    count), so one privacy unit moves them by at most ``contributions`` in L1: Laplace noise of
    scale ``contributions / epsilon`` makes the vector of noisy counts epsilon-DP, and comparing
    each with ``k`` is post-processing. The noisy counts themselves are never released.
    """
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError("epsilon must be positive")
    noisy = laplace(counts, max(contributions, 1) / epsilon)
    return [v < k for v in noisy]
