"""Flow 3, client-held keys: encrypted weights in, encrypted aggregates out, weights never seen.

The client sends a *public* context (no secret key; :func:`params.load_client_context` refuses
one that has it) and her weights, each weight ``w_c`` encrypted on its own ciphertext and
replicated over the ``K`` output slots. The gateway computes

    out = offset~ + Σ_c enc(w_c) ⊙ M~[c, :]          (ciphertext × plaintext only: depth 1)

and returns ``out``, which only the client can decrypt. ``M~`` and ``offset~`` are *statistics
of the plan-applied data with Laplace noise already added* (the functional mechanism):

* ``linear_groups`` — per group g, the sum over its selected rows of the linear score
  ``w·x (+ b)``: ``M[c, g] = Σ_{i∈g} x_ic`` (an intercept column of ones gives ``b·n_g``);
* ``logistic_gradient`` — the gradient of the logistic loss with the sigmoid replaced by its
  degree-1 Taylor polynomial ``σ(z) ≈ 1/2 + z/4``:
  ``Σ_i (σ(w·x_i) − y_i) x_i ≈ Σ_i (1/2 − y_i) x_i + ¼ (Σ_i x_i x_iᵀ) w``, so
  ``M = ¼ A~ᵀ`` with ``A = Σ x xᵀ`` and ``offset = b~ = Σ (1/2 − y) x``.

Because the noise is added to the data's statistics *before* they meet the weights, the
output is post-processing of an epsilon-DP release whatever weights the client sends: a
client cannot lower the noise by choosing large or one-hot weights, and sensitivities do not
depend on the (unknown) weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from govern.errors import InvalidRequest, ReleaseRefused
from govern.privacy.he.params import tenseal
from govern.privacy.he.prepare import PlainView, ViewSpec

QUERY_OPS: tuple[str, ...] = ("linear_groups", "logistic_gradient")


@dataclass(frozen=True)
class Query:
    op: str
    features: tuple[str, ...]
    intercept: bool = True
    label: str | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Query:
        if not isinstance(data, Mapping):
            raise InvalidRequest("computation must be an object like {\"op\": \"linear_groups\", \"features\": [...]}")
        unknown = sorted(set(data) - {"op", "features", "intercept", "label"})
        if unknown:
            raise InvalidRequest(f"computation: unknown field(s) {', '.join(unknown)}")
        op = data.get("op")
        if op not in QUERY_OPS:
            raise ReleaseRefused(f"'{op}' is not an encrypted query; declare one of: {', '.join(QUERY_OPS)}")
        listed = data.get("features") or []
        if not isinstance(listed, list) or not listed or not all(isinstance(f, str) and f for f in listed):
            raise InvalidRequest("computation: name one or more features")
        features = tuple(dict.fromkeys(listed))
        if not isinstance(data.get("intercept", True), bool):
            raise InvalidRequest("computation: intercept must be true or false")
        label = data.get("label")
        if op == "logistic_gradient":
            if not isinstance(label, str) or not label:
                raise InvalidRequest("logistic_gradient needs a label column (0/1)")
            if label in features:
                raise InvalidRequest("the label cannot also be a feature")
        elif label is not None:
            raise InvalidRequest("only logistic_gradient takes a label")
        return cls(op, features, bool(data.get("intercept", True)), label)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "features": list(self.features), "intercept": self.intercept}
        if self.label:
            out["label"] = self.label
        return out

    @property
    def columns(self) -> tuple[str, ...]:
        """The view columns this query reads."""
        return (*self.features, self.label) if self.label else self.features

    @property
    def weights(self) -> list[str]:
        """What each encrypted weight multiplies, in order."""
        return [*self.features, *(["intercept"] if self.intercept else [])]

    def outputs(self, spec: ViewSpec) -> list[str]:
        if self.op == "logistic_gradient":
            return self.weights
        return list(spec.groups) if spec.groups else ["total"]

    def check(self, spec: ViewSpec, *, max_slots: int) -> None:
        if self.label is not None and tuple(spec.bounds[self.label]) != (0.0, 1.0):
            raise InvalidRequest(f"the label '{self.label}' must have bounds [0, 1]")
        if self.op == "logistic_gradient" and spec.groups:
            raise InvalidRequest("logistic_gradient is not grouped")
        if len(self.outputs(spec)) > max_slots or len(self.weights) > max_slots:
            raise ReleaseRefused(f"at most {max_slots} weights and {max_slots} outputs per query", limit=max_slots)

    def bounds(self, spec: ViewSpec) -> list[float]:
        """max |x| of each design column (features, then the intercept's 1)."""
        out = [max(abs(lo), abs(hi)) for lo, hi in (spec.bounds[f] for f in self.features)]
        return [*out, *([1.0] if self.intercept else [])]


def design(query: Query, plain: PlainView) -> np.ndarray:
    """The n × d design matrix: features (0 on unselected rows), then the intercept column."""
    cols = [plain.values[f] for f in query.features]
    if query.intercept:
        cols.append(plain.selected)
    return np.column_stack(cols)


def statistics(query: Query, plain: PlainView, spec: ViewSpec) -> tuple[np.ndarray, np.ndarray]:
    """Exact (M, offset): M is d × K, offset has K entries."""
    x = design(query, plain)
    if query.op == "linear_groups":
        indicators = [plain.groups[g] for g in spec.groups] if spec.groups else [plain.selected]
        m = x.T @ np.column_stack(indicators)
        return m, np.zeros(m.shape[1])
    assert query.label is not None
    y = plain.values[query.label]
    a = x.T @ x
    b = x.T @ (0.5 * plain.selected - y)
    return a.T / 4.0, b


def noise_scales(query: Query, spec: ViewSpec, contributions: int, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Laplace scales for each entry of (M, offset) that make the pair epsilon-DP.

    One privacy unit (at most ``contributions`` rows, each clipped) moves entry ``e`` by at
    most ``Δ_e``; noise ``Lap(b_e)`` costs ``Δ_e / b_e``. Each statistic gets an equal share of
    epsilon, so a feature with small bounds (or the intercept's counts) is not drowned by the
    noise a wide feature needs:

    * linear_groups: ``Δ[c, g] = k·m_c`` (a row lies in one group), d rows of M share epsilon;
    * logistic_gradient: ``A = Σ x xᵀ`` gets epsilon/2 over its d(d+1)/2 distinct entries
      (``Δ[j, c] = k·m_j·m_c``; the lower triangle mirrors the upper), ``b`` gets epsilon/2
      over d entries (``Δ[j] = k·m_j/2``, since ``|1/2 − y| ≤ 1/2``).
    """
    m = np.array(query.bounds(spec))
    d = len(m)
    if query.op == "linear_groups":
        k = len(spec.groups) or 1
        per_row = contributions * m * d / epsilon
        return np.repeat(per_row[:, None], k, axis=1), np.zeros(k)
    a_scale = contributions * np.outer(m, m) * (d * (d + 1) / 2) / (epsilon / 2)
    b_scale = contributions * 0.5 * m * d / (epsilon / 2)
    return a_scale / 4.0, b_scale  # M = A/4: scaling a statistic scales its noise


def add_noise(m: np.ndarray, offset: np.ndarray, query: Query, scales: tuple[np.ndarray, np.ndarray],
              laplace: Any) -> tuple[np.ndarray, np.ndarray]:
    """Laplace noise on every statistic (``laplace(values, scale)`` from :mod:`.noise`)."""
    m_scale, off_scale = scales
    if query.op == "logistic_gradient":  # noise the upper triangle of A/4, mirror it
        noisy = m.copy()
        for j in range(m.shape[0]):
            for c in range(j, m.shape[1]):
                noisy[j, c] = noisy[c, j] = laplace([m[j, c]], float(m_scale[j, c]))[0]
        off = np.array([laplace([v], float(s))[0] for v, s in zip(offset, off_scale, strict=True)])
        return noisy, off
    noisy = np.vstack([laplace(row.tolist(), float(s[0])) for row, s in zip(m, m_scale, strict=True)])
    return noisy, offset


def load_weights(context: Any, weights: Sequence[bytes], count: int, slots: int) -> list[Any]:
    """The client's encrypted weights, checked before any budget is spent: ``count`` CKKS
    vectors of ``slots`` slots each, under her context."""
    ts = tenseal()
    if len(weights) != count:
        raise InvalidRequest(f"expected {count} encrypted weights, got {len(weights)}")
    out = []
    for c, blob in enumerate(weights):
        try:
            w = ts.ckks_vector_from(context, blob)
        except Exception:
            raise InvalidRequest(f"encrypted weight {c} is not a CKKS vector for this context") from None
        if w.size() != slots:
            raise InvalidRequest(f"encrypted weight {c} must hold {slots} slots (the weight, repeated), got {w.size()}")
        out.append(w)
    return out


def evaluate(context: Any, weights: Sequence[Any], m: np.ndarray, offset: np.ndarray) -> bytes:
    """``offset + Σ_c enc(w_c) ⊙ M[c]`` under the client's public context: a ciphertext only
    she can decrypt. ``offset`` is encrypted afresh under her public key, which also
    re-randomizes the result."""
    ts = tenseal()
    out = None
    for c, w in enumerate(weights):
        try:
            term = w.mul(m[c].tolist())
        except ValueError:
            raise InvalidRequest("the encrypted weights have no room for one multiplication "
                                 "(encrypt them fresh, at the context's scale)") from None
        out = term if out is None else out.add_(term)
    assert out is not None
    out.add_(ts.ckks_vector(context, offset.tolist()))
    return out.serialize()
