"""Client helpers for encrypted views: a few lines for a scientist, no TenSEAL plumbing.

Flows 1 and 2 — compute on data you never see, get noisy aggregates back::

    view = client.encrypted_view("patients", columns=["charges"])      # ciphertexts + public context
    total = view.sum("charges")        # computed here, on ciphertexts; you cannot decrypt it
    total.release(epsilon=0.5).value   # the gateway releases the declared sum, with DP noise
    view.release({"op": "mean", "column": "charges"}, epsilon=0.5).value

A release sends the *declaration* of what you computed (``total.computation``), never your
ciphertext: the gateway evaluates the declaration itself (see docs/encryption.md).

Flow 3 — keep your model private; only you can decrypt the answer::

    res = client.encrypted_query("patients", {"charges": 0.002, "intercept": 1.0},
                                 op="linear_groups", group_by="region", groups=["EU", "US"], epsilon=0.5)
    res.values            # {"EU": …, "US": …}: per-group sums of your linear score, noisy

The secret key of flow 3 is made here and never leaves this process: the gateway receives
``context.serialize(save_secret_key=False)`` and one ciphertext per weight.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from govern.client.transport import EOS_MARKER, StreamInterrupted, Transport
from govern.privacy.he import container
from govern.privacy.he.computation import Computation, ViewShape, evaluate
from govern.privacy.he.params import new_secret_context, public_context_bytes, tenseal


@dataclass
class Release:
    """Noisy aggregate values released by the gateway (one per group, or one)."""

    values: dict[str, float | None]
    epsilon: float
    body: dict[str, Any]

    @property
    def value(self) -> float | None:
        """The single released value (ungrouped computations)."""
        if len(self.values) != 1:
            raise ValueError("this release has one value per group: use .values")
        return next(iter(self.values.values()))


@dataclass
class EncryptedResult:
    """What you computed locally: its declaration and your ciphertexts (undecryptable by you)."""

    computation: Computation
    parts: dict[str, Any]
    view: EncryptedView

    def release(self, epsilon: float) -> Release:
        return self.view.release(self.computation, epsilon)


class EncryptedView:
    """A received encrypted view: header, public context and lazily loaded ciphertexts."""

    def __init__(self, data: container.Container, client: Transport | None = None, purpose: str | None = None) -> None:
        self._data = data
        self._client = client
        self._purpose = purpose
        self._context: Any = None
        self._loaded: dict[tuple[str, str | None], list[Any]] = {}

    # -- what the view is ------------------------------------------------------------------------
    @property
    def header(self) -> dict[str, Any]:
        return self._data.header

    @property
    def token(self) -> str:
        return str(self.header["token"])

    @property
    def rows(self) -> int:
        return int(self.header["rows"])

    @property
    def columns(self) -> list[str]:
        return [c["name"] for c in self.header["columns"]]

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return {c["name"]: tuple(c["bounds"]) for c in self.header["columns"]}  # type: ignore[misc]

    @property
    def groups(self) -> list[str]:
        return list(self.header.get("groups") or [])

    @property
    def context(self) -> Any:
        """The public TenSEAL context (no secret key: nothing here can decrypt)."""
        if self._context is None:
            self._context = tenseal().context_from(self._data.context)
        return self._context

    def _vectors(self, kind: str, column: str | None) -> list[Any]:
        key = (kind, column)
        if key not in self._loaded:
            ts = tenseal()
            blobs = self._data.vectors.get(key)
            if blobs is None:
                raise KeyError(f"the view has no {kind} vector {column or ''}".strip())
            self._loaded[key] = [ts.ckks_vector_from(self.context, b) for b in blobs]
        return self._loaded[key]

    # VectorSource protocol (govern.privacy.he.computation)
    def values(self, column: str) -> list[Any]:
        return self._vectors("values", column)

    def selected(self) -> list[Any]:
        return self._vectors("selected", None)

    def group(self, key: str) -> list[Any]:
        return self._vectors("group", key)

    # -- local computation -----------------------------------------------------------------------
    def compute(self, computation: Computation | Mapping[str, Any]) -> EncryptedResult:
        """Evaluate a declared computation on the ciphertexts (slot sums need ``galois=True``)."""
        comp = computation if isinstance(computation, Computation) else Computation.parse(computation)
        comp.check(self._shape(), max_slots=max(len(self.groups), 1))
        parts = evaluate(comp, self, self.groups, rotate=bool(self.header.get("galois")))
        return EncryptedResult(comp, parts, self)

    def sum(self, column: str, *, by_group: bool = False) -> EncryptedResult:
        return self.compute({"op": "sum", "column": column, "by_group": by_group})

    def count(self, *, by_group: bool = False) -> EncryptedResult:
        return self.compute({"op": "count", "by_group": by_group})

    def mean(self, column: str, *, by_group: bool = False) -> EncryptedResult:
        return self.compute({"op": "mean", "column": column, "by_group": by_group})

    def dot(self, a: str, b: str) -> EncryptedResult:
        return self.compute({"op": "dot", "columns": [a, b]})

    def linear(self, weights: Mapping[str, float], intercept: float = 0.0) -> EncryptedResult:
        return self.compute({"op": "linear", "columns": list(weights), "weights": list(weights.values()),
                             "intercept": intercept})

    def _shape(self) -> ViewShape:
        return ViewShape(tuple(self.columns), self.bounds, tuple(self.groups), self.rows)

    # -- release ---------------------------------------------------------------------------------
    def release(self, computation: Computation | Mapping[str, Any], epsilon: float) -> Release:
        """Ask the gateway to release a declared aggregate over this view (noisy)."""
        if self._client is None:
            raise RuntimeError("this view is not attached to a client")
        return release(self._client, self, computation, epsilon, purpose=self._purpose)


def open_view(client: Transport, name: str, columns: Sequence[str], *, filter: str | None = None,
              bounds: Mapping[str, Sequence[float]] | None = None, limit: int | None = None,
              group_by: str | None = None, groups: Sequence[str] | None = None, galois: bool = False,
              purpose: str | None = None) -> EncryptedView:
    """``POST /v1/datasets/{name}/encrypted`` and parse the container."""
    body: dict[str, Any] = {"columns": list(columns), "galois": galois}
    for key, value in (("filter", filter), ("limit", limit), ("group_by", group_by)):
        if value is not None:
            body[key] = value
    if bounds:
        body["bounds"] = {k: list(v) for k, v in bounds.items()}
    if groups:
        body["groups"] = list(groups)
    response = client.send("POST", f"/v1/datasets/{name}/encrypted", purpose=purpose, json=body,
                            stream=True, idempotent=True)
    try:
        data = response.read()
    finally:
        response.close()
    if not data.endswith(EOS_MARKER):
        raise StreamInterrupted("the encrypted view ended before its end-of-stream marker")
    return EncryptedView(container.read(data), client, purpose)


def release(client: Transport, view: EncryptedView | str, computation: Computation | Mapping[str, Any],
            epsilon: float, *, purpose: str | None = None) -> Release:
    """``POST /v1/he/release``: the declaration and the view token — never a ciphertext."""
    comp = computation if isinstance(computation, Computation) else Computation.parse(computation)
    token = view.token if isinstance(view, EncryptedView) else view
    body = {"view_token": token, "computation": comp.to_dict(), "epsilon": epsilon}
    out = client.send("POST", "/v1/he/release", purpose=purpose, json=body, idempotent=False).json()
    return Release(out["values"], out["epsilon"], out)


@dataclass
class QueryResult:
    """Decrypted (by you, with your key) noisy aggregates of an encrypted query."""

    values: dict[str, float | None]  # None: below the gateway's noisy he_min_rows threshold
    body: dict[str, Any] = field(repr=False)


class PrivateKey:
    """A client-held CKKS key pair. ``public()`` is all the gateway ever receives."""

    def __init__(self) -> None:
        self._context = new_secret_context()

    def public(self) -> bytes:
        return public_context_bytes(self._context, galois=False, relin=False)

    def encrypt(self, values: Sequence[float]) -> bytes:
        return tenseal().ckks_vector(self._context, list(values)).serialize()

    def decrypt(self, blob: bytes) -> list[float]:
        return list(tenseal().ckks_vector_from(self._context, blob).decrypt())

    def __repr__(self) -> str:
        return "PrivateKey(<held by this process only>)"


def encrypted_query(client: Transport, name: str, weights: Mapping[str, float], *, op: str = "linear_groups",
                    label: str | None = None, epsilon: float, filter: str | None = None,
                    bounds: Mapping[str, Sequence[float]] | None = None, limit: int | None = None,
                    group_by: str | None = None, groups: Sequence[str] | None = None,
                    key: PrivateKey | None = None, purpose: str | None = None) -> QueryResult:
    """``POST /v1/datasets/{name}/encrypted-query`` with weights encrypted under your own key.

    ``weights`` maps feature columns (and optionally ``"intercept"``) to values. Each weight is
    encrypted on its own ciphertext, repeated over the output slots; the answer is decrypted
    here with your key.
    """
    key = key or PrivateKey()
    features = [k for k in weights if k != "intercept"]
    intercept = "intercept" in weights
    names = [*features, *(["intercept"] if intercept else [])]
    outputs = names if op == "logistic_gradient" else (list(groups) if groups else ["total"])
    computation: dict[str, Any] = {"op": op, "features": features, "intercept": intercept}
    if label is not None:
        computation["label"] = label
    body: dict[str, Any] = {
        "computation": computation, "epsilon": epsilon,
        "context": base64.b64encode(key.public()).decode(),
        "weights": [base64.b64encode(key.encrypt([float(weights[n])] * len(outputs))).decode() for n in names],
    }
    for k, v in (("filter", filter), ("limit", limit), ("group_by", group_by)):
        if v is not None:
            body[k] = v
    if bounds:
        body["bounds"] = {k: list(v) for k, v in bounds.items()}
    if groups:
        body["groups"] = list(groups)
    out = client.send("POST", f"/v1/datasets/{name}/encrypted-query", purpose=purpose, json=body,
                       idempotent=False).json()
    decrypted = key.decrypt(base64.b64decode(out["ciphertext"]))
    suppressed = set((out.get("threshold") or {}).get("suppressed") or ())
    values = {name: (None if name in suppressed else v) for name, v in zip(out["outputs"], decrypted, strict=True)}
    return QueryResult(values, out)
