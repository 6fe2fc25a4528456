"""Reading the steward's documents while keeping file and line for every value.

YAML mappings load as :class:`LocatedDict` (a ``dict`` that remembers the line of each key)
and lists as :class:`LocatedList`, so every later problem can be reported as ``file:line``.
``policy.csv`` loads as :class:`CsvRule` rows with their line numbers. Nothing here interprets
the content; that is ``govern.policy.load``'s job.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from govern.errors import ProblemCollector


class LocatedDict(dict):  # type: ignore[type-arg]
    """A dict that knows its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class LocatedList(list):  # type: ignore[type-arg]
    line: int = 0
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LocatedDict:
    loader.flatten_mapping(node)
    result = LocatedDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    duplicates: list[tuple[Any, int]] = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            duplicates.append((key, key_node.start_mark.line + 1))
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    result.duplicates = duplicates  # type: ignore[attr-defined]
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(path: Path, problems: ProblemCollector, display: str) -> LocatedDict:
    """Load a YAML mapping with line numbers; problems are collected, never raised."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.add(display, None, "file is missing")
        return _empty()
    except OSError as exc:
        problems.add(display, None, f"cannot be read: {exc.strerror}")
        return _empty()
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        problems.add(display, line, f"invalid YAML: {exc.problem}")
        return _empty()
    if data is None:
        return _empty()
    if not isinstance(data, LocatedDict):
        problems.add(display, 1, "top level must be a mapping")
        return _empty()
    _report_duplicates(data, problems, display)
    return data


def _report_duplicates(node: Any, problems: ProblemCollector, display: str) -> None:
    if isinstance(node, LocatedDict):
        for key, line in getattr(node, "duplicates", []):
            problems.add(display, line, f"duplicate key '{key}'")
        for value in node.values():
            _report_duplicates(value, problems, display)
    elif isinstance(node, LocatedList):
        for value in node:
            _report_duplicates(value, problems, display)


def _empty() -> LocatedDict:
    d = LocatedDict()
    d.key_lines = {}
    return d


@dataclass(frozen=True)
class CsvRule:
    """One row of ``policy.csv``: its type (p, g, g2, g3), fields, and line number."""

    ptype: str
    fields: tuple[str, ...]
    line: int

    def __str__(self) -> str:
        return ", ".join((self.ptype, *self.fields))


def load_policy_csv(path: Path, problems: ProblemCollector, display: str) -> list[CsvRule]:
    """Parse Casbin's CSV policy format; blank lines and ``#`` comments are ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.add(display, None, "file is missing")
        return []
    except OSError as exc:
        problems.add(display, None, f"cannot be read: {exc.strerror}")
        return []
    rules: list[CsvRule] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            row = next(csv.reader(io.StringIO(stripped), skipinitialspace=True))
        except (csv.Error, StopIteration) as exc:
            problems.add(display, lineno, f"cannot parse CSV: {exc}")
            continue
        row = [cell.strip() for cell in row]
        if any(cell == "" for cell in row):
            problems.add(display, lineno, "empty field")
            continue
        rules.append(CsvRule(row[0], tuple(row[1:]), lineno))
    return rules
