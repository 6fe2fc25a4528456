"""Load a policy folder into a :class:`PolicySet`, collecting *every* problem.

``load_policy`` raises :class:`~govern.errors.PolicyError` carrying all problems found (file,
line, message); ``read_policy`` returns them instead, for ``govern policy check``. Parsing
(this module) and cross-reference checks (``govern.policy.check``) are separate passes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from govern.errors import ProblemCollector
from govern.plan.model import LEVELS, MaskSpec
from govern.policy.documents import LocatedDict, LocatedList, load_policy_csv, load_yaml
from govern.policy.model import (
    FILES,
    FORMATS,
    PERIODS,
    ApiKeyEntry,
    BudgetEntry,
    BudgetOverride,
    CellRuleEntry,
    ColumnEntry,
    DatasetEntry,
    PolicySet,
    PrincipalEntry,
    RowFilterEntry,
    TagMask,
)
from govern.policy.results import parse_results


def read_policy(directory: str | Path) -> tuple[PolicySet | None, list]:
    """Parse and check a policy folder. Returns (policy or None, problems)."""
    from govern.policy.check import check_policy

    d = Path(directory)
    problems = ProblemCollector()
    if not d.is_dir():
        problems.add(str(d), None, "policy folder does not exist")
        return None, problems.problems
    model_text = _read_text(d / "model.conf", "model.conf", problems)
    rules = load_policy_csv(d / "policy.csv", problems, "policy.csv")
    catalog = load_yaml(d / "catalog.yaml", problems, "catalog.yaml")
    masking = load_yaml(d / "masking.yaml", problems, "masking.yaml")
    principals_doc = load_yaml(d / "principals.yaml", problems, "principals.yaml")

    policy = PolicySet(
        directory=d,
        model_text=model_text,
        rules=rules,
        datasets=_datasets(catalog, problems),
        tag_masks=_tag_masks(masking, problems),
        cell_rules=_cell_rules(masking, problems),
        row_filters=_row_filters(masking, problems),
        principals=_principals(principals_doc, problems),
        declared_attributes=tuple(_str_list(principals_doc.get("attributes"), problems, "principals.yaml", principals_doc.line_of("attributes"), "attributes")),
        version=_version(d),
        budgets=list(_budgets(catalog, problems)),
    )
    check_policy(policy, problems)
    return (None if problems.problems else policy), problems.problems


def load_policy(directory: str | Path) -> PolicySet:
    """Like ``read_policy`` but raises PolicyError listing every problem."""
    policy, problems = read_policy(directory)
    collector = ProblemCollector(list(problems))
    collector.raise_if_any()
    assert policy is not None
    return policy


def _version(d: Path) -> str:
    h = hashlib.sha256()
    for name in FILES:
        p = d / name
        h.update(name.encode() + b"\0")
        if p.exists():
            h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _read_text(path: Path, display: str, problems: ProblemCollector) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.add(display, None, "file is missing")
    except OSError as exc:
        problems.add(display, None, f"cannot be read: {exc.strerror}")
    return ""


def _mapping(value: Any, problems: ProblemCollector, file: str, line: int, what: str) -> LocatedDict:
    if value is None:
        d = LocatedDict()
        d.key_lines = {}
        d.line = line
        return d
    if not isinstance(value, LocatedDict):
        problems.add(file, line, f"{what} must be a mapping")
        d = LocatedDict()
        d.key_lines = {}
        d.line = line
        return d
    return value


def _str_list(value: Any, problems: ProblemCollector, file: str, line: int, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(file, line, f"{what} must be a list of strings")
        return []
    return list(value)


def _unknown_keys(node: LocatedDict, allowed: set[str], problems: ProblemCollector, file: str, what: str) -> None:
    for key in node:
        if key not in allowed:
            problems.add(file, node.line_of(key), f"unknown field '{key}' in {what} (allowed: {', '.join(sorted(allowed))})")


# -- catalog.yaml ----------------------------------------------------------------------------

_DATASET_FIELDS = {"location", "format", "level", "privacy_unit", "description", "columns", "budget", "synthesizer", "result"}
_COLUMN_FIELDS = {"tags", "level", "description", "bounds", "public_values"}


def _datasets(doc: LocatedDict, problems: ProblemCollector) -> dict[str, DatasetEntry]:
    F = "catalog.yaml"
    _unknown_keys(doc, {"datasets"}, problems, F, "catalog")
    datasets = _mapping(doc.get("datasets"), problems, F, doc.line_of("datasets"), "datasets")
    out: dict[str, DatasetEntry] = {}
    for name, raw in datasets.items():
        line = datasets.line_of(name)
        if not isinstance(name, str) or not name.isidentifier():
            problems.add(F, line, f"dataset name '{name}' must be an identifier (letters, digits, _)")
            continue
        body = _mapping(raw, problems, F, line, f"dataset '{name}'")
        _unknown_keys(body, _DATASET_FIELDS, problems, F, f"dataset '{name}'")
        location = body.get("location")
        if not isinstance(location, str) or not location:
            problems.add(F, body.line_of("location") if "location" in body else line, f"dataset '{name}' needs a location")
            location = ""
        fmt = body.get("format", "parquet")
        if fmt not in FORMATS:
            problems.add(F, body.line_of("format"), f"dataset '{name}': format must be one of {', '.join(FORMATS)}")
        level = body.get("level", "internal")
        if level not in LEVELS:
            problems.add(F, body.line_of("level"), f"dataset '{name}': unknown level '{level}' (levels: {', '.join(LEVELS)})")
        cols_node = _mapping(body.get("columns"), problems, F, body.line_of("columns"), f"columns of '{name}'")
        columns: dict[str, ColumnEntry] = {}
        for cname, craw in cols_node.items():
            cline = cols_node.line_of(cname)
            cbody = _mapping(craw, problems, F, cline, f"column '{name}.{cname}'")
            _unknown_keys(cbody, _COLUMN_FIELDS, problems, F, f"column '{name}.{cname}'")
            clevel = cbody.get("level")
            if clevel is not None and clevel not in LEVELS:
                problems.add(F, cbody.line_of("level"), f"column '{name}.{cname}': unknown level '{clevel}'")
            bounds = cbody.get("bounds")
            if bounds is not None:
                if (not isinstance(bounds, list) or len(bounds) != 2
                        or not all(isinstance(b, int | float) for b in bounds) or bounds[0] > bounds[1]):
                    problems.add(F, cbody.line_of("bounds"), f"column '{name}.{cname}': bounds must be [low, high] numbers")
                    bounds = None
            tags = _str_list(cbody.get("tags"), problems, F, cbody.line_of("tags"), f"tags of '{name}.{cname}'")
            columns[str(cname)] = ColumnEntry(
                name=str(cname),
                tags=tuple(tags),
                level=clevel,
                line=cline,
                description=cbody.get("description"),
                bounds=tuple(bounds) if bounds else None,  # type: ignore[arg-type]
                public_values=bool(cbody.get("public_values", False)),
            )
        unit = body.get("privacy_unit")
        if unit is not None and unit not in columns:
            problems.add(F, body.line_of("privacy_unit"), f"dataset '{name}': privacy_unit '{unit}' is not a catalogued column")
        out[name] = DatasetEntry(
            name=name,
            location=location,
            format=fmt if fmt in FORMATS else "parquet",
            level=level if level in LEVELS else "restricted",
            columns=columns,
            line=line,
            privacy_unit=unit,
            description=body.get("description"),
            extra={**{k: body[k] for k in ("budget",) if k in body}, **_synthesizer(body, name, columns, problems)},
            results=parse_results(body["result"], name, set(columns), unit, body.line_of("result"),
                                  lambda line, message: problems.add(F, line, message)) if "result" in body else {},
        )
    return out


def _synthesizer(body: LocatedDict, name: str, columns: dict[str, ColumnEntry],
                 problems: ProblemCollector) -> dict[str, Any]:
    """``synthesizer:`` of a dataset, validated (govern.privacy.synthetic.spec); {} if absent."""
    if "synthesizer" not in body:
        return {}
    from govern.privacy.synthetic.spec import parse_synthesizer

    spec = parse_synthesizer(body.get("synthesizer"), name, columns,
                             lambda line, message: problems.add("catalog.yaml", line, message),
                             body.line_of("synthesizer"))
    return {"synthesizer": spec} if spec is not None else {}


_BUDGET_FIELDS = {"epsilon", "delta", "period", "principals", "description"}
MAX_EPSILON = 1_000_000.0  # the ledger counts in 1e-12 units in a 64-bit integer


def _budgets(doc: LocatedDict, problems: ProblemCollector) -> list[BudgetEntry]:
    """``budget:`` of each dataset: epsilon (> 0), delta (0 ≤ δ < 1, default 0), period
    (default ``month``) and per-principal/role ``principals:`` overrides of epsilon/delta."""
    F = "catalog.yaml"
    datasets = doc.get("datasets")
    if not isinstance(datasets, LocatedDict):
        return []
    out: list[BudgetEntry] = []
    for name, body in datasets.items():
        if not isinstance(body, LocatedDict) or "budget" not in body:
            continue
        line = body.line_of("budget")
        node = _mapping(body.get("budget"), problems, F, line, f"budget of '{name}'")
        _unknown_keys(node, _BUDGET_FIELDS, problems, F, f"budget of '{name}'")
        epsilon = _budget_number(node, "epsilon", None, problems, f"budget of '{name}'")
        delta = _budget_number(node, "delta", 0.0, problems, f"budget of '{name}'")
        period = node.get("period", "month")
        if period not in PERIODS:
            problems.add(F, node.line_of("period"), f"budget of '{name}': period must be one of {', '.join(PERIODS)}")
            period = "month"
        overrides: list[BudgetOverride] = []
        subjects = _mapping(node.get("principals"), problems, F, node.line_of("principals"),
                            f"principals of the budget of '{name}'")
        for subject, raw in subjects.items():
            sline = subjects.line_of(subject)
            what = f"budget of '{name}' for '{subject}'"
            snode = _mapping(raw, problems, F, sline, what)
            _unknown_keys(snode, {"epsilon", "delta"}, problems, F, what)
            s_eps = _budget_number(snode, "epsilon", epsilon, problems, what)
            s_delta = _budget_number(snode, "delta", delta, problems, what)
            if s_eps is not None and s_delta is not None:
                overrides.append(BudgetOverride(str(subject), s_eps, s_delta, sline))
        if epsilon is not None and delta is not None:
            out.append(BudgetEntry(str(name), epsilon, delta, str(period), line, tuple(overrides)))
    return out


def _budget_number(node: LocatedDict, key: str, default: float | None, problems: ProblemCollector,
                   what: str) -> float | None:
    """A budget amount. YAML 1.1 reads ``1e-6`` (no dot) as text, so numeric text is accepted."""
    F = "catalog.yaml"
    if key not in node:
        if default is None:
            problems.add(F, node.line, f"{what} needs '{key}'")
        return default
    raw = node.get(key)
    value: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            value = None
    ok = value is not None and value == value and (
        0 < value <= MAX_EPSILON if key == "epsilon" else 0 <= value < 1)
    if not ok:
        rule = f"a number in (0, {MAX_EPSILON:g}]" if key == "epsilon" else "a number in [0, 1)"
        problems.add(F, node.line_of(key), f"{what}: {key} must be {rule}")
        return None
    return value


# -- masking.yaml ----------------------------------------------------------------------------

def _mask_spec(node: LocatedDict, problems: ProblemCollector, file: str, what: str) -> MaskSpec | None:
    from govern.errors import MaskError
    from govern.mask import registry

    if "mask" not in node:
        problems.add(file, node.line, f"{what} needs a 'mask'")
        return None
    fn = node.get("mask")
    if fn is None:  # YAML reads `mask: null` as None: that is the `null` mask function.
        fn = "null"
    if not isinstance(fn, str):
        problems.add(file, node.line_of("mask"), f"{what}: mask must be a function name")
        return None
    params = node.get("params") or {}
    if not isinstance(params, dict):
        problems.add(file, node.line_of("params"), f"{what}: params must be a mapping")
        return None
    try:
        func = registry.get(fn)
    except MaskError:
        problems.add(file, node.line_of("mask"), f"{what}: unknown mask function '{fn}' (known: {', '.join(registry.names())})")
        return None
    for issue in func.validate(dict(params)):
        problems.add(file, node.line_of("params") if "params" in node else node.line_of("mask"), f"{what}: mask '{fn}': {issue}")
    return MaskSpec.of(fn, dict(params))


def _tag_masks(doc: LocatedDict, problems: ProblemCollector) -> dict[str, TagMask]:
    F = "masking.yaml"
    _unknown_keys(doc, {"tags", "cell_rules", "row_filters"}, problems, F, "masking")
    tags = _mapping(doc.get("tags"), problems, F, doc.line_of("tags"), "tags")
    out: dict[str, TagMask] = {}
    for tag, raw in tags.items():
        line = tags.line_of(tag)
        if isinstance(raw, str):
            node = LocatedDict(mask=raw)
            node.line = line
            node.key_lines = {"mask": line}
        else:
            node = _mapping(raw, problems, F, line, f"tag '{tag}'")
            _unknown_keys(node, {"mask", "params", "description"}, problems, F, f"tag '{tag}'")
        spec = _mask_spec(node, problems, F, f"tag '{tag}'")
        if spec is not None:
            out[str(tag)] = TagMask(str(tag), spec, line)
    return out


def _list_of_mappings(doc: LocatedDict, key: str, problems: ProblemCollector, file: str) -> list[LocatedDict]:
    raw = doc.get(key)
    if raw is None:
        return []
    if not isinstance(raw, LocatedList):
        problems.add(file, doc.line_of(key), f"{key} must be a list")
        return []
    items = []
    for i, item in enumerate(raw):
        if not isinstance(item, LocatedDict):
            problems.add(file, raw.line_of(i), f"each entry of {key} must be a mapping")
            continue
        items.append(item)
    return items


def _cell_rules(doc: LocatedDict, problems: ProblemCollector) -> list[CellRuleEntry]:
    F = "masking.yaml"
    out = []
    for i, node in enumerate(_list_of_mappings(doc, "cell_rules", problems, F)):
        _unknown_keys(node, {"name", "dataset", "column", "when", "mask", "params", "description"}, problems, F, "cell rule")
        name = str(node.get("name") or f"cell-rule-{i + 1}")
        missing = [k for k in ("dataset", "column", "when") if not isinstance(node.get(k), str)]
        if missing:
            problems.add(F, node.line, f"cell rule '{name}' needs {', '.join(missing)}")
            continue
        spec = _mask_spec(node, problems, F, f"cell rule '{name}'")
        if spec is not None:
            out.append(CellRuleEntry(name, node["dataset"], node["column"], node["when"], spec, node.line))
    return out


def _row_filters(doc: LocatedDict, problems: ProblemCollector) -> list[RowFilterEntry]:
    F = "masking.yaml"
    out = []
    for i, node in enumerate(_list_of_mappings(doc, "row_filters", problems, F)):
        _unknown_keys(node, {"name", "dataset", "filter", "description"}, problems, F, "row filter")
        name = str(node.get("name") or f"row-filter-{i + 1}")
        missing = [k for k in ("dataset", "filter") if not isinstance(node.get(k), str)]
        if missing:
            problems.add(F, node.line, f"row filter '{name}' needs {', '.join(missing)}")
            continue
        out.append(RowFilterEntry(name, node["dataset"], node["filter"], node.line))
    return out


# -- principals.yaml -------------------------------------------------------------------------

def _principals(doc: LocatedDict, problems: ProblemCollector) -> dict[str, PrincipalEntry]:
    F = "principals.yaml"
    _unknown_keys(doc, {"principals", "attributes"}, problems, F, "principals file")
    node = _mapping(doc.get("principals"), problems, F, doc.line_of("principals"), "principals")
    out: dict[str, PrincipalEntry] = {}
    for name, raw in node.items():
        line = node.line_of(name)
        body = _mapping(raw, problems, F, line, f"principal '{name}'")
        _unknown_keys(body, {"attributes", "description", "api_keys"}, problems, F, f"principal '{name}'")
        attrs = _mapping(body.get("attributes"), problems, F, body.line_of("attributes"), f"attributes of '{name}'")
        clearance = attrs.get("clearance")
        if clearance is not None and clearance not in LEVELS:
            problems.add(F, attrs.line_of("clearance"), f"principal '{name}': unknown clearance '{clearance}'")
        keys = []
        for k in _list_of_mappings(body, "api_keys", problems, F):
            if not isinstance(k.get("id"), str) or not isinstance(k.get("hash"), str):
                problems.add(F, k.line, f"principal '{name}': each api key needs 'id' and 'hash'")
                continue
            keys.append(ApiKeyEntry(k["id"], k["hash"], k.line))
        out[str(name)] = PrincipalEntry(
            name=str(name),
            attributes=_plain(attrs),
            line=line,
            description=body.get("description"),
            api_keys=tuple(keys),
        )
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
