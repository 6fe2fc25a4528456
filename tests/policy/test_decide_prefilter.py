"""The decider's prefilter (a request no rule could match is denied without asking Casbin)
answers exactly as Casbin does: every (principal, object, action, purpose) of the demo policy,
decided with the prefilter and by a full enforcer without it."""

from __future__ import annotations

import itertools

from govern.identity.principal import Principal
from govern.policy.decide import Decider, standard_model
from govern.policy.load import load_policy
from govern.policy.model import local_principal

ACTIONS = ("read", "unmask", "query_dp", "read_synthetic", "read_encrypted", "reidentify", "bypass_row_filter",
           "administer")


def test_the_prefilter_decides_as_casbin_does(policy_dir) -> None:
    policy = load_policy(policy_dir)
    assert standard_model(policy.model_text)
    fast, full = Decider(policy), Decider(policy, shard=False)
    objects = [f"dataset:{d}" for d in policy.datasets] + ["group:clinical", "dataset:nope"]
    objects += [f"tag:{t}" for t in sorted(policy.known_tags | {"phi", "unknown"})]
    objects += [f"column:{d}.{c}" for d, e in policy.datasets.items() for c in [*e.columns, "phone"]]
    who = [local_principal(policy, n) for n in policy.principals]
    who += [Principal("oidc:x", roles=("analyst",)), Principal("role:steward", roles=("steward",))]
    purposes = sorted(policy.purposes | {"astrology"})
    checked = 0
    for p, obj, act, purpose in itertools.product(who, objects, ACTIONS, purposes):
        a, b = fast.decide(p, obj, act, purpose), full.decide(p, obj, act, purpose)
        assert (a.allowed, a.rule) == (b.allowed, b.rule), (p.name, obj, act, purpose)
        checked += 1
    assert checked > 5_000


def test_another_model_always_asks_casbin(policy_dir) -> None:
    text = (policy_dir / "model.conf").read_text()
    assert not standard_model(text.replace("r.act == p.act", "keyMatch(r.act, p.act)"))
    assert not standard_model(text.replace("r = sub, obj, act, purpose", "r = sub, obj, act, purpose, x"))
