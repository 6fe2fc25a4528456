"""The mask function registry: the one extension point for masks.

The built-in functions are listed once, in :data:`BUILTINS` (restrictiveness order in
:mod:`govern.mask.functions`); :func:`register` adds a third-party function. A name that is not
registered is a :class:`~govern.errors.MaskError`, never a silent pass.
"""

from __future__ import annotations

from govern.errors import MaskError
from govern.mask.function import MaskFunction
from govern.mask.functions import basic, generalize, partial, perturb, pseudonym, tokenize

__all__ = ["BUILTINS", "all_functions", "get", "names", "register"]

BUILTINS: tuple[MaskFunction, ...] = (
    basic.NULL,
    basic.REDACT,
    pseudonym.HASH,
    tokenize.TOKENIZE,
    generalize.GENERALIZE,
    perturb.RANDOMIZED_RESPONSE,
    perturb.NOISE,
    perturb.DATE_SHIFT,
    partial.EMAIL_DOMAIN,
    partial.SHOW_FIRST,
    partial.SHOW_LAST,
    partial.REGEX_REPLACE,
)

_REGISTRY: dict[str, MaskFunction] = {}


def register(fn: MaskFunction) -> MaskFunction:
    """Add a mask function (each name once)."""
    if fn.name in _REGISTRY:
        raise ValueError(f"mask function {fn.name!r} registered twice")
    _REGISTRY[fn.name] = fn
    return fn


for _fn in BUILTINS:
    register(_fn)


def get(name: str) -> MaskFunction:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MaskError(f"unknown mask function '{name}'") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def all_functions() -> list[MaskFunction]:
    return sorted(_REGISTRY.values(), key=lambda f: (f.rank, f.name))
