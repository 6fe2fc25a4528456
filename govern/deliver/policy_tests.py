"""Policy tests: YAML expectations a steward keeps next to the policy (``tests/*.yaml``).

Each file holds a list of cases::

    - name: bob sees the last four digits of ssn, never a diagnosis
      principal: bob
      dataset: patients
      purpose: model-training
      expect:
        columns:
          ssn: show_last          # a mask function, or keep | masked | withheld
          diagnosis: withheld
          region: {action: keep}
        row_filter: false         # true: some row filter applies; false: none
        cell_rules: [charges]     # columns with cell rules
    - name: eve has no purpose at all
      principal: eve
      dataset: patients
      purpose: analytics
      expect: {denied: purpose-not-entitled}   # or true, or any error slug

Failures are reported with the case's ``file:line``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from govern.deliver.governor import Governor
from govern.errors import GovernError
from govern.plan.model import AccessPlan
from govern.policy.documents import LocatedDict, LocatedList, _Loader
from govern.policy.model import local_principal

_ACTIONS = {"keep": "keep", "clear": "keep", "masked": "mask", "mask": "mask",
            "withheld": "withhold", "withhold": "withhold"}


@dataclass
class TestResult:
    name: str
    location: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def load_cases(directory: Path) -> tuple[list[tuple[str, LocatedDict]], list[str]]:
    import yaml

    cases: list[tuple[str, LocatedDict]] = []
    errors: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
        except yaml.YAMLError as exc:
            errors.append(f"{path}: invalid YAML: {exc}")
            continue
        if not isinstance(doc, LocatedList):
            errors.append(f"{path}:1: a policy test file is a list of cases")
            continue
        for i, case in enumerate(doc):
            if not isinstance(case, LocatedDict):
                errors.append(f"{path}:{doc.line_of(i)}: each case must be a mapping")
                continue
            cases.append((f"{path}:{case.line}", case))
    return cases, errors


def run_policy_tests(governor: Governor, directory: Path) -> list[TestResult]:
    cases, errors = load_cases(directory)
    results = [TestResult("load", e.split(": ", 1)[0], [e.split(": ", 1)[-1]]) for e in errors]
    for location, case in cases:
        results.append(_run_case(governor, location, case))
    return results


def _run_case(governor: Governor, location: str, case: LocatedDict) -> TestResult:
    name = str(case.get("name") or "(unnamed)")
    result = TestResult(name, location)
    missing = [k for k in ("principal", "dataset", "purpose", "expect") if k not in case]
    if missing:
        result.failures.append(f"case needs {', '.join(missing)}")
        return result
    expect = case["expect"] or {}
    try:
        principal = local_principal(governor.state.policy, case["principal"])
        plan = governor.plan(principal, case["dataset"], case["purpose"])
    except GovernError as exc:
        wanted = expect.get("denied")
        if wanted in (None, False):
            result.failures.append(f"expected access, got {exc.slug}: {exc.detail}")
        elif wanted is not True and wanted != exc.slug:
            result.failures.append(f"expected denial '{wanted}', got '{exc.slug}': {exc.detail}")
        return result
    if expect.get("denied") not in (None, False):
        result.failures.append(f"expected denial '{expect['denied']}', but access was granted")
        return result
    result.failures.extend(_check_plan(plan, expect))
    return result


def _check_plan(plan: AccessPlan, expect: dict[str, Any]) -> list[str]:
    failures: list[str] = []
    for column, want in (expect.get("columns") or {}).items():
        try:
            col = plan.column(column)
        except KeyError:
            failures.append(f"column '{column}' is not in the data")
            continue
        got = f"{col.action}" + (f" {col.mask}" if col.mask else "")
        if isinstance(want, str):
            want_spec: dict[str, Any] = ({"action": _ACTIONS[want]} if want in _ACTIONS
                                         else {"action": "mask", "mask": want})
        elif isinstance(want, dict):
            want_spec = dict(want)
            if "action" in want_spec:
                want_spec["action"] = _ACTIONS.get(want_spec["action"], want_spec["action"])
        else:
            failures.append(f"column '{column}': expectation must be a string or mapping")
            continue
        ok = want_spec.get("action", col.action) == col.action
        if "mask" in want_spec:
            ok = ok and col.mask is not None and col.mask.function == want_spec["mask"]
        if "params" in want_spec:
            ok = ok and col.mask is not None and all(col.mask.kwargs.get(k) == v for k, v in want_spec["params"].items())
        if not ok:
            failures.append(f"column '{column}': expected {_describe(want_spec)}, got {got} ({col.reason})")
    if "row_filter" in expect:
        has = bool(plan.row_filters)
        if bool(expect["row_filter"]) != has:
            failures.append(f"expected row_filter={expect['row_filter']}, got {has}"
                            + (f" ({plan.row_filter_sql})" if has else ""))
    if "cell_rules" in expect:
        got_cols = sorted({c.column for c in plan.cell_rules})
        if sorted(expect["cell_rules"] or []) != got_cols:
            failures.append(f"expected cell rules on {sorted(expect['cell_rules'] or [])}, got {got_cols}")
    return failures


def _describe(spec: dict[str, Any]) -> str:
    text = spec.get("action", "?")
    if "mask" in spec:
        text += f" {spec['mask']}"
    if "params" in spec:
        text += f" {spec['params']}"
    return text


__all__ = ["TestResult", "load_cases", "run_policy_tests"]
