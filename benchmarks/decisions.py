"""Decision latency with many rules: pycasbin alone vs govern's sharded, cached decider.

pycasbin's enforce() is linear in the number of rules. govern gives each principal a shard
holding only the rules that can match it, and caches decisions per request tuple.

    .venv/bin/python benchmarks/decisions.py --rules 10000 [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from govern.identity.principal import Principal  # noqa: E402
from govern.plan.compile import compile_plan  # noqa: E402
from govern.policy.decide import Decider  # noqa: E402
from govern.policy.load import load_policy  # noqa: E402


def make_policy(n_rules: int) -> Path:
    d = Path(tempfile.mkdtemp(prefix="govern-bench-"))
    shutil.copytree(REPO / "policies", d, dirs_exist_ok=True)
    lines = [(d / "policy.csv").read_text()]
    principals = [(d / "principals.yaml").read_text().rstrip()]
    n_users = max(1, n_rules // 10)
    for u in range(n_users):
        principals.append(f"  user{u}: {{attributes: {{clearance: internal}}}}")
    for i in range(n_rules):
        lines.append(f"p, user{i % n_users}, dataset:patients, read, purpose{i // n_users}, allow\n")
    (d / "policy.csv").write_text("".join(lines))
    (d / "principals.yaml").write_text("\n".join(principals) + "\n")
    return d


def timed(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", type=int, default=10_000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    d = make_policy(args.rules)
    policy = load_policy(d)
    alice = Principal("alice", {"regions": ["EU"], "clearance": "confidential"})
    request = ("dataset:patients", "read", "analytics")
    schema = pa.schema([(n, pa.string()) for n in ("patient_id", "name", "email", "ssn", "zip", "region", "diagnosis")])

    full = Decider(policy, shard=False)
    full.decide(alice, "tag:x", "read", "warmup")  # build the enforcer once
    naive = timed(lambda: full._enforcer_for(alice).enforce_ex("alice", *request), 5)

    sharded = Decider(policy)
    t = time.perf_counter()
    sharded.decide(alice, *request)
    first = time.perf_counter() - t
    uncached = timed(lambda: sharded._enforcer_for(alice).enforce_ex("alice", *request), 50)
    cached = timed(lambda: sharded.decide(alice, *request), 1000)
    plan_cold = timed(lambda: compile_plan(policy, Decider(policy), alice, "analytics", "patients", schema), 3)
    plan_warm = timed(lambda: compile_plan(policy, sharded, alice, "analytics", "patients", schema), 50)

    results = {
        "rules": len(policy.rules),
        "pycasbin_full_enforce_ms": naive * 1e3,
        "govern_first_decision_ms_incl_shard_build": first * 1e3,
        "govern_shard_enforce_ms": uncached * 1e3,
        "govern_cached_decision_us": cached * 1e6,
        "plan_compile_cold_ms": plan_cold * 1e3,
        "plan_compile_warm_ms": plan_warm * 1e3,
        "speedup_shard_vs_full": naive / uncached,
    }
    for k, v in results.items():
        print(f"{k:<45} {v:,.3f}" if isinstance(v, float) else f"{k:<45} {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(d)


if __name__ == "__main__":
    main()
