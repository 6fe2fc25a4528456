"""Who is asking: a principal with attributes, resolved by an identity source.

A principal is plain data. Local principals come from ``principals.yaml``; principals from an
identity provider (JWT) carry their roles and attributes from token claims. Missing clearance
means ``public``; a clearance that is not a declared level ranks below ``public`` (fail closed:
no read up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NAMESPACE_SEPARATOR = ":"


def is_namespaced(name: str) -> bool:
    """Whether ``name`` belongs to an identity provider's namespace (``oidc:<sub>``).

    Local principals and roles never contain ``:``; an identity provider's subjects always do
    (``principal_prefix`` ends with it), so a token can never name a local principal or a role
    and inherit its grants. ``policy.csv`` may name such subjects without declaring them.
    """
    return NAMESPACE_SEPARATOR in name


@dataclass(frozen=True)
class Principal:
    name: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    roles: tuple[str, ...] = ()  # extra roles asserted by an identity provider
    source: str = "local"

    @property
    def clearance(self) -> str:
        """The ``clearance`` attribute as given; ``public`` when absent. It is *not* checked
        here: the plan compiler ranks anything that is not a declared level below ``public``
        (:func:`govern.plan.model.clearance_rank`), and explains it by this text."""
        value = self.attributes.get("clearance")
        if value is None:
            return "public"
        return value if isinstance(value, str) else repr(value)

    @property
    def cache_key(self) -> tuple[str, tuple[str, ...]]:
        return (self.name, tuple(sorted(self.roles)))
