"""Accepted suggestions as a ``catalog.yaml`` change: a unified patch, or the file rewritten.

The steward's file is edited as text, not re-dumped: each accepted column becomes one line
inserted after the last line of its dataset's ``columns:`` block, at that block's indentation,
in the same flow style the example catalog uses, with a comment saying where it came from::

      phone: {tags: [contact], level: confidential}  # govern classify: phone number, confidence 0.80

so every other line, comment and blank line stays as it was. Where the nodes are is read from
PyYAML's composed node tree (its marks), the same parser the policy loader uses.

Only columns the catalog does not list yet are written (they are withheld until classified);
a steward's existing classification is never overwritten — a disagreeing suggestion is reported
for review instead. A suggestion whose tag has no mask in the policy is not written either:
accepting it would serve the column in the clear. Before anything is written, the whole policy
folder is checked with the edited catalog (:func:`govern.policy.load.read_policy`); a change that
would not load is refused, so a running gateway never sees it.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from govern.errors import InvalidRequest, PolicyError
from govern.monitor.classify import Classification, Suggestion
from govern.policy.load import read_policy
from govern.policy.model import FILES

__all__ = ["CatalogChange", "catalog_change"]

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class CatalogChange:
    path: Path
    before: str
    after: str
    accepted: tuple[tuple[str, Suggestion], ...]  # (column, suggestion) written
    skipped: tuple[tuple[str, str], ...]  # (column, why it was not written)

    @property
    def empty(self) -> bool:
        return self.before == self.after

    def diff(self, label: str = "catalog.yaml") -> str:
        """The change as a unified diff (``patch -p1`` applies it in the policy folder's parent)."""
        return "".join(difflib.unified_diff(self.before.splitlines(keepends=True), self.after.splitlines(keepends=True),
                                            f"a/{label}", f"b/{label}"))

    def write(self) -> None:
        """Check the policy folder with the edited catalog, then replace the file atomically.
        Raises PolicyError (nothing written) if the edited policy would not load, and
        InvalidRequest if the file changed since the change was computed."""
        if self.path.read_text(encoding="utf-8") != self.before:
            raise InvalidRequest(f"{self.path.name} changed since the suggestions were computed; run classify again")
        check_policy_with(self.path.parent, self.after)
        fd, tmp = tempfile.mkstemp(prefix=".catalog.", suffix=".yaml", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(self.after)
            shutil.copymode(self.path, tmp)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def check_policy_with(policy_dir: Path, catalog: str) -> None:
    """Raise PolicyError unless the policy folder loads with ``catalog`` as its catalog.yaml."""
    with tempfile.TemporaryDirectory(prefix="govern-classify-") as tmp:
        for name in FILES:
            if (policy_dir / name).exists():
                shutil.copy2(policy_dir / name, Path(tmp) / name)
        (Path(tmp) / "catalog.yaml").write_text(catalog, encoding="utf-8")
        policy, problems = read_policy(tmp)
        if policy is None:
            raise PolicyError(problems)


def catalog_change(policy_dir: Path, classification: Classification, *, columns: list[str] | None = None,
                   min_confidence: float = 0.5) -> CatalogChange:
    """The catalog edit accepting the best suggestion of each unclassified column (only
    ``columns`` if given) with at least ``min_confidence``."""
    path = policy_dir / "catalog.yaml"
    try:
        before = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"cannot read catalog.yaml: {exc.strerror}") from None
    accepted: list[tuple[str, Suggestion]] = []
    skipped: list[tuple[str, str]] = []
    wanted = set(columns) if columns is not None else None
    for col in classification.columns:
        if wanted is not None and col.column not in wanted:
            continue
        best = col.best
        if col.catalog_tags is not None:
            if wanted is not None:
                skipped.append((col.column, "already in the catalog (edit it by hand)"))
            continue
        if best is None or best.confidence < min_confidence:
            skipped.append((col.column, "no suggestion: it stays withheld"))
        elif not best.masked:
            skipped.append((col.column, f"tag '{best.tag}' has no mask in masking.yaml (add one, then accept)"))
        else:
            accepted.append((col.column, best))
    if wanted is not None:
        unknown = wanted - {c.column for c in classification.columns}
        skipped += [(name, "no such column in the data") for name in sorted(unknown)]
    after = _insert(before, classification.dataset, accepted) if accepted else before
    return CatalogChange(path, before, after, tuple(accepted), tuple(skipped))


# -- the text edit -------------------------------------------------------------------------------------
def _scalar(text: str) -> str:
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


def _entry(s: Suggestion) -> str:
    body = f"tags: [{_scalar(s.tag)}]" + (f", level: {s.level}" if s.level else "")
    return "{" + body + "}"


def _line(column: str, s: Suggestion, indent: int) -> str:
    return f"{' ' * indent}{_scalar(column)}: {_entry(s)}  # govern classify: {s.label}, confidence {s.confidence:.2f}\n"


def _value(mapping: yaml.Node, key: str) -> yaml.Node | None:
    if not isinstance(mapping, yaml.MappingNode):
        return None
    for k, v in mapping.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


def _last_line(node: yaml.Node) -> int:
    """0-based index of the last line holding ``node``'s text."""
    if isinstance(node, yaml.ScalarNode) or getattr(node, "flow_style", False):
        end = node.end_mark
        return end.line - 1 if end.column == 0 and end.line > node.start_mark.line else end.line
    if isinstance(node, yaml.MappingNode):
        return max((_last_line(v) for pair in node.value for v in pair), default=node.start_mark.line)
    if isinstance(node, yaml.SequenceNode):
        return max((_last_line(v) for v in node.value), default=node.start_mark.line)
    return node.start_mark.line


def _insert(text: str, dataset: str, accepted: list[tuple[str, Suggestion]]) -> str:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"catalog.yaml is not valid YAML: {exc}") from None
    datasets = _value(root, "datasets") if root is not None else None
    ds = _value(datasets, dataset) if datasets is not None else None
    if not isinstance(ds, yaml.MappingNode) or ds.flow_style or not ds.value:
        raise InvalidRequest(f"catalog.yaml: dataset '{dataset}' is not a block mapping; add the columns by hand")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    columns = _value(ds, "columns")
    child_indent = ds.value[0][0].start_mark.column
    if columns is None:
        at = _last_line(ds) + 1
        new = [f"{' ' * child_indent}columns:\n"] + [_line(c, s, child_indent + 2) for c, s in accepted]
    elif isinstance(columns, yaml.MappingNode) and not columns.flow_style and columns.value:
        at = _last_line(columns) + 1
        indent = columns.value[0][0].start_mark.column
        new = [_line(c, s, indent) for c, s in accepted]
    elif isinstance(columns, yaml.MappingNode) and not columns.value:  # columns: {}
        row = columns.start_mark.line
        line = lines[row]
        lines[row] = line[:columns.start_mark.column].rstrip() + line[columns.end_mark.column:]
        at = row + 1
        new = [_line(c, s, child_indent + 2) for c, s in accepted]
    else:
        raise InvalidRequest(f"catalog.yaml: the columns of '{dataset}' are not a block mapping; add them by hand")
    return "".join(lines[:at] + new + lines[at:])
