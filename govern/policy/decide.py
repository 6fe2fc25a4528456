"""Decisions: pycasbin with the model of ``model.conf``, explained and cached.

Casbin decides; this module makes its answers explainable and fast:

* every :class:`Decision` carries allowed/denied, the rule that decided it and that rule's
  ``policy.csv`` line, so ``explain``, audit records and error messages all say *why*;
* decisions are cached per (principal, roles, object, action, purpose); a reload builds a new
  :class:`Decider`, which drops the cache;
* ``enforce()`` in pycasbin is linear in the number of rules, so each principal gets a *shard*:
  an enforcer holding only the ``p`` rules whose subject is the principal or one of its roles
  (plus all g, g2, g3 links). Rules for other subjects can never match ``g(r.sub, p.sub)``, so
  the shard decides exactly as the full enforcer would. (``FastEnforcer`` is not used: in
  pycasbin 2.8.0 it drops g2/g3 links.)
* with the standard matcher (:data:`STANDARD_MATCHER`), a request no rule of the shard could
  match — none with its action, an object its object reaches through ``g2`` and a purpose its
  purpose reaches through ``g3`` — is "no rule grants it" without asking Casbin, which parses its
  matcher again on every call (~0.2 ms). Most questions a plan asks (``unmask`` on each column)
  are of that kind. The graph walk here reaches at least what Casbin's does, so it never turns
  a decision Casbin would make into a denial.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import casbin
from casbin.model import Model

from govern.identity.principal import Principal
from govern.plan.model import Reason
from govern.policy.documents import CsvRule
from govern.policy.model import PolicySet

ALLOW, DENY = "allow", "deny"

# The model of ARCHITECTURE §3; other models (a steward may write any) always ask Casbin.
STANDARD_MATCHER = "g(r.sub, p.sub) && g2(r.obj, p.obj) && g3(r.purpose, p.purpose) && r.act == p.act"
STANDARD_DEFINITIONS = {"r": "sub, obj, act, purpose", "p": "sub, obj, act, purpose, eft"}


def standard_model(model_text: str) -> bool:
    """Whether ``model_text`` has the standard request, policy and matcher definitions."""
    found = {m.group(1): " ".join(m.group(2).split())
             for m in re.finditer(r"^\s*(r|p|m)\s*=\s*(.+?)\s*$", model_text, re.M)}
    return (found.get("m") == STANDARD_MATCHER and found.get("r") == STANDARD_DEFINITIONS["r"]
            and found.get("p") == STANDARD_DEFINITIONS["p"])


@dataclass(frozen=True)
class Decision:
    allowed: bool
    subject: str
    object: str
    action: str
    purpose: str
    rule: CsvRule | None = None

    @property
    def explicit_deny(self) -> bool:
        """Denied by a deny rule (as opposed to: no rule granted it)."""
        return not self.allowed and self.rule is not None

    @property
    def source(self) -> str | None:
        return f"policy.csv:{self.rule.line}" if self.rule else None

    @property
    def reason(self) -> Reason:
        if self.allowed:
            return Reason("allowed", f"allowed by rule '{self.rule}'", self.source)
        if self.rule is not None:
            return Reason("denied-by-rule", f"denied by rule '{self.rule}'", self.source)
        return Reason(
            "no-grant",
            f"no rule grants '{self.action}' on {self.object} to {self.subject} for purpose '{self.purpose}'",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "subject": self.subject,
            "object": self.object,
            "action": self.action,
            "purpose": self.purpose,
            "rule": str(self.rule) if self.rule else None,
            "source": self.source,
            "reason": self.reason.detail,
        }


class Decider:
    """Answers (principal, object, action, purpose) for one policy version."""

    def __init__(self, policy: PolicySet, *, shard: bool = True, cache_size: int = 100_000) -> None:
        self.policy = policy
        self._shard = shard
        self._rule_by_key: dict[tuple[str, ...], CsvRule] = {
            (r.ptype, *r.fields): r for r in policy.rules
        }
        self._p_rules = [r for r in policy.rules if r.ptype == "p"]
        self._parents: dict[str, dict[str, list[str]]] = {"g": {}, "g2": {}, "g3": {}}
        for r in policy.rules:
            if r.ptype in self._parents and len(r.fields) == 2:
                self._parents[r.ptype].setdefault(r.fields[0], []).append(r.fields[1])
        self._lock = threading.RLock()
        self._shards: OrderedDict[tuple[str, tuple[str, ...]], casbin.Enforcer] = OrderedDict()
        self._cache: OrderedDict[tuple[object, ...], Decision] = OrderedDict()
        self._cache_size = cache_size
        self._full: casbin.Enforcer | None = None
        self._prefilter = shard and standard_model(policy.model_text)
        self._shard_rules: dict[tuple[str, tuple[str, ...]], list[CsvRule]] = {}

    # -- graph helpers ---------------------------------------------------------------------
    def ancestors(self, ptype: str, name: str) -> list[str]:
        """``name`` and everything it reaches through ``ptype`` links (roles, groups, purposes)."""
        seen = [name]
        stack = [name]
        while stack:
            for parent in self._parents[ptype].get(stack.pop(), []):
                if parent not in seen:
                    seen.append(parent)
                    stack.append(parent)
        return seen

    def subjects(self, principal: Principal) -> list[str]:
        found: list[str] = []
        for start in (principal.name, *principal.roles):
            for s in self.ancestors("g", start):
                if s not in found:
                    found.append(s)
        return found

    def purposes(self, principal: Principal) -> list[str]:
        """Purposes the principal may act under: those some allow rule grants it, and their
        sub-purposes (a grant for ``research`` serves ``model-training``)."""
        subjects = set(self.subjects(principal))
        granted = {r.fields[3] for r in self._p_rules if r.fields[0] in subjects and r.fields[4] == ALLOW}
        children: dict[str, list[str]] = {}
        for child, parents in self._parents["g3"].items():
            for parent in parents:
                children.setdefault(parent, []).append(child)
        out: set[str] = set()
        stack = list(granted)
        while stack:
            p = stack.pop()
            if p not in out:
                out.add(p)
                stack.extend(children.get(p, []))
        return sorted(out)

    # -- enforcers -------------------------------------------------------------------------
    def _new_enforcer(self, p_rules: list[CsvRule], extra_g: list[list[str]]) -> casbin.Enforcer:
        model = Model()
        model.load_model_from_text(self.policy.model_text)
        enforcer = casbin.Enforcer(model)
        enforcer.enable_auto_build_role_links(False)
        if p_rules:
            enforcer.add_policies([list(r.fields) for r in p_rules])
        for ptype in ("g", "g2", "g3"):
            links = [list(r.fields) for r in self.policy.rules if r.ptype == ptype]
            if ptype == "g":
                links += extra_g
            if links:
                enforcer.add_named_grouping_policies(ptype, links)
        enforcer.build_role_links()
        return enforcer

    def _enforcer_for(self, principal: Principal) -> casbin.Enforcer:
        extra_g = [[principal.name, role] for role in principal.roles]
        if not self._shard:
            if self._full is None:
                self._full = self._new_enforcer(self._p_rules, [])
            if not extra_g:
                return self._full
        key = principal.cache_key
        enforcer = self._shards.get(key)
        if enforcer is None:
            subjects = set(self.subjects(principal))
            rules = [r for r in self._p_rules if r.fields[0] in subjects]
            enforcer = self._new_enforcer(rules, extra_g)
            self._shards[key] = enforcer
            if len(self._shards) > 1024:
                self._shards.popitem(last=False)
        else:
            self._shards.move_to_end(key)
        return enforcer

    # -- decisions -------------------------------------------------------------------------
    def decide(self, principal: Principal, obj: str, action: str, purpose: str) -> Decision:
        key = (principal.cache_key, obj, action, purpose)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            if self._prefilter and not self._may_match(principal, obj, action, purpose):
                decision = Decision(False, principal.name, obj, action, purpose, None)
            else:
                enforcer = self._enforcer_for(principal)
                allowed, explain = enforcer.enforce_ex(principal.name, obj, action, purpose)
                rule = self._rule_by_key.get(("p", *explain)) if explain else None
                decision = Decision(bool(allowed), principal.name, obj, action, purpose, rule)
            self._cache[key] = decision
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return decision

    def _may_match(self, principal: Principal, obj: str, action: str, purpose: str) -> bool:
        """Whether some ``p`` rule of the principal's shard could match (the standard matcher)."""
        key = principal.cache_key
        rules = self._shard_rules.get(key)
        if rules is None:
            subjects = set(self.subjects(principal))
            rules = [r for r in self._p_rules if r.fields[0] in subjects]
            if len(self._shard_rules) > 1024:
                self._shard_rules.clear()
            self._shard_rules[key] = rules
        candidates = [r for r in rules if r.fields[2] == action]
        if not candidates:
            return False
        objects = set(self.ancestors("g2", obj))
        purposes = set(self.ancestors("g3", purpose))
        return any(r.fields[1] in objects and r.fields[3] in purposes for r in candidates)

    def cache_info(self) -> dict[str, int]:
        return {"decisions": len(self._cache), "shards": len(self._shards)}
