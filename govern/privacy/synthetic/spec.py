"""The ``synthesizer:`` entry of a dataset in ``catalog.yaml``: which SDV synthesizer, with
which parameters, and which columns are generated instead of learned.

Pure (no SDV import), so ``govern policy check`` validates it on a gateway installed without
the ``synthetic`` extra. Syntax::

    synthesizer:
      type: gaussian_copula            # gaussian_copula (default) | ctgan | copulagan | tvae | mst (DP)
      params: {default_distribution: beta}   # keyword arguments of the SDV synthesizer (mst: epsilon, …)
      steward: carol                   # mst only: whose privacy budget pays for the fit
      generate: {zip: postcode}        # column -> Faker sdtype: made up, never learned

Every problem is reported with its file and line, like the rest of the catalog. Parameters are
checked against an allow-list per type: unknown names, wrong types and GPU use are refused
(the synthetic extra installs the CPU build of torch; ``enable_gpu`` is always off).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DISTRIBUTIONS",
    "DP_SYNTHESIZERS",
    "SYNTHESIZERS",
    "SynthesizerSpec",
    "parse_synthesizer",
    "spec_of",
]

SYNTHESIZERS: tuple[str, ...] = ("gaussian_copula", "ctgan", "copulagan", "tvae", "mst")
DP_SYNTHESIZERS: tuple[str, ...] = ("mst",)  # trained under (epsilon, delta), charged to ``steward``
DISTRIBUTIONS: tuple[str, ...] = ("norm", "beta", "truncnorm", "gamma", "uniform", "gaussian_kde")
_FIELDS = {"type", "params", "generate", "description", "steward"}
_SDTYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")

Check = Callable[[Any], str | None]  # None when the value is acceptable, else what is wrong


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _positive_int(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1_000_000
    return None if ok else "must be a positive integer"


def _positive_number(v: Any) -> str | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1e6
    return None if ok else "must be a positive number"


def _non_negative_number(v: Any) -> str | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1e6
    return None if ok else "must be a number ≥ 0"


def _dims(v: Any) -> str | None:
    ok = (isinstance(v, list) and 0 < len(v) <= 8
          and all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 4096 for x in v))
    return None if ok else "must be a list of 1..8 layer sizes (1..4096)"


def _distribution(v: Any) -> str | None:
    return None if v in DISTRIBUTIONS else f"must be one of {', '.join(DISTRIBUTIONS)}"


def _distributions(v: Any) -> str | None:
    if not isinstance(v, dict):
        return "must map column names to distributions"
    bad = [str(k) for k, d in v.items() if d not in DISTRIBUTIONS]
    return f"unknown distribution for {', '.join(bad)} (known: {', '.join(DISTRIBUTIONS)})" if bad else None


_COMMON: dict[str, Check] = {"enforce_min_max_values": _bool, "enforce_rounding": _bool}
_COPULA: dict[str, Check] = {"default_distribution": _distribution, "numerical_distributions": _distributions}
_GAN: dict[str, Check] = {
    "embedding_dim": _positive_int, "generator_dim": _dims, "discriminator_dim": _dims,
    "generator_lr": _positive_number, "generator_decay": _non_negative_number,
    "discriminator_lr": _positive_number, "discriminator_decay": _non_negative_number,
    "batch_size": _positive_int, "discriminator_steps": _positive_int, "log_frequency": _bool,
    "epochs": _positive_int, "pac": _positive_int,
}
_TVAE: dict[str, Check] = {
    "embedding_dim": _positive_int, "compress_dims": _dims, "decompress_dims": _dims,
    "l2scale": _non_negative_number, "batch_size": _positive_int, "epochs": _positive_int,
    "loss_factor": _positive_number,
}
def _epsilon(v: Any) -> str | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 100
    return None if ok else "must be a number in (0, 100]"


def _delta(v: Any) -> str | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1
    return None if ok else "must be a number in [0, 1)"


def _bins(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 256
    return None if ok else "must be an integer in [2, 256]"


def _bounds_map(v: Any) -> str | None:
    ok = isinstance(v, dict) and all(
        isinstance(b, list) and len(b) == 2 and all(isinstance(x, int | float) and not isinstance(x, bool) for x in b)
        and b[0] < b[1] for b in v.values())
    return None if ok else "must map columns to [low, high] numbers (years for dates)"


def _domains_map(v: Any) -> str | None:
    ok = isinstance(v, dict) and all(isinstance(vals, list) and 0 < len(vals) <= 10_000 for vals in v.values())
    return None if ok else "must map columns to their lists of values"


_MST: dict[str, Check] = {"epsilon": _epsilon, "delta": _delta, "bins": _bins, "bounds": _bounds_map,
                          "domains": _domains_map}
PARAMS: dict[str, dict[str, Check]] = {
    "gaussian_copula": {**_COMMON, **_COPULA},
    "ctgan": {**_COMMON, **_GAN},
    "copulagan": {**_COMMON, **_GAN, **_COPULA},
    "tvae": {**_COMMON, **_TVAE},
    "mst": _MST,
}


@dataclass(frozen=True)
class SynthesizerSpec:
    """A validated ``synthesizer:`` entry. ``params`` and ``generate`` are sorted pairs, so the
    spec is hashable and its JSON form is canonical (it is part of a model's identity)."""

    type: str = "gaussian_copula"
    params: tuple[tuple[str, Any], ...] = ()
    generate: tuple[tuple[str, str], ...] = ()  # (column, sdtype)
    line: int | None = None
    steward: str | None = None  # DP synthesizers: whose privacy budget pays for the fit

    @property
    def dp(self) -> bool:
        return self.type in DP_SYNTHESIZERS

    @property
    def kwargs(self) -> dict[str, Any]:
        return {k: _thaw(v) for k, v in self.params}

    @property
    def generated(self) -> dict[str, str]:
        return dict(self.generate)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "params": self.kwargs, "generate": self.generated}
        if self.steward is not None:  # only DP synthesizers have one: other models keep their keys
            out["steward"] = self.steward
        return out


def spec_of(entry: Any) -> SynthesizerSpec:
    """The dataset's synthesizer spec (the loader stores it in ``entry.extra``), or the default
    (a Gaussian copula with SDV's defaults)."""
    spec = getattr(entry, "extra", {}).get("synthesizer")
    return spec if isinstance(spec, SynthesizerSpec) else SynthesizerSpec()


def parse_synthesizer(node: Any, dataset: str, columns: Iterable[str], add: Callable[[int | None, str], None],
                      line: int) -> SynthesizerSpec | None:
    """Validate one ``synthesizer:`` mapping. ``add(line, message)`` records a problem; returns
    None when anything is wrong (the policy is then refused as a whole)."""
    what = f"synthesizer of '{dataset}'"
    line_of = getattr(node, "line_of", lambda _key: line)
    if not isinstance(node, dict):
        add(line, f"{what} must be a mapping")
        return None
    found = _Counter(add)
    for key in node:
        if key not in _FIELDS:
            found.add(line_of(key), f"unknown field '{key}' in {what} (allowed: {', '.join(sorted(_FIELDS))})")
    kind = node.get("type", "gaussian_copula")
    if kind not in SYNTHESIZERS:
        found.add(line_of("type"), f"{what}: type must be one of {', '.join(SYNTHESIZERS)}")
        kind = "gaussian_copula"
    known = set(columns)
    params = node.get("params") or {}
    if not isinstance(params, dict):
        found.add(line_of("params"), f"{what}: params must be a mapping")
        params = {}
    allowed = PARAMS[kind]
    for name, value in params.items():
        where = getattr(params, "line_of", lambda _k: line_of("params"))(name)
        if name == "enable_gpu":
            found.add(where, f"{what}: enable_gpu is not configurable (govern trains on the CPU)")
        elif name not in allowed:
            found.add(where, f"{what}: unknown parameter '{name}' for {kind} (allowed: {', '.join(sorted(allowed))})")
        else:
            problem = allowed[name](value)
            if problem:
                found.add(where, f"{what}: {name} {problem}")
            elif name == "numerical_distributions":
                for col in value:
                    if col not in known:
                        found.add(where, f"{what}: numerical_distributions names '{col}', which is not a catalogued column")
    steward = node.get("steward")
    if kind in DP_SYNTHESIZERS:
        if not isinstance(params.get("epsilon"), int | float):
            found.add(line_of("params"), f"{what}: {kind} needs params.epsilon (the privacy loss of the fit)")
        if not isinstance(steward, str) or not steward:
            found.add(line_of("type"), f"{what}: {kind} needs a steward (the principal whose budget pays for the fit)")
        for key in ("bounds", "domains"):
            for col in params.get(key) or {} if isinstance(params.get(key), dict) else {}:
                if col not in known:
                    found.add(line_of("params"), f"{what}: params.{key} names '{col}', which is not a catalogued column")
    elif steward is not None:
        found.add(line_of("steward"), f"{what}: only a DP synthesizer ({', '.join(DP_SYNTHESIZERS)}) has a steward")
    if kind in ("ctgan", "copulagan"):
        batch, pac = params.get("batch_size", 500), params.get("pac", 10)
        if isinstance(batch, int) and isinstance(pac, int) and pac > 0 and batch % pac:
            found.add(line_of("params"), f"{what}: batch_size ({batch}) must be a multiple of pac ({pac})")
    generate = node.get("generate") or {}
    if not isinstance(generate, dict):
        found.add(line_of("generate"), f"{what}: generate must map column names to Faker sdtypes")
        generate = {}
    for col, sdtype in generate.items():
        where = getattr(generate, "line_of", lambda _k: line_of("generate"))(col)
        if col not in known:
            found.add(where, f"{what}: generate names '{col}', which is not a catalogued column")
        if not isinstance(sdtype, str) or not _SDTYPE.fullmatch(sdtype):
            found.add(where, f"{what}: the sdtype of '{col}' must be a Faker function name such as "
                              "email, name, postcode, or 'id'")
    if found.count:
        return None
    return SynthesizerSpec(
        type=kind,
        params=tuple(sorted((str(k), _freeze(v)) for k, v in params.items())),
        generate=tuple(sorted((str(k), str(v)) for k, v in generate.items())),
        line=line,
        steward=str(steward) if kind in DP_SYNTHESIZERS else None,
    )


class _Counter:
    """Passes problems on and counts them (a spec with any problem is not returned)."""

    def __init__(self, add: Callable[[int | None, str], None]) -> None:
        self._add = add
        self.count = 0

    def add(self, line: int | None, message: str) -> None:
        self.count += 1
        self._add(line, message)


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value):
            return {k: _thaw(v) for k, v in value}
        return [_thaw(v) for v in value]
    return value
