"""Levels rank fail-closed both ways: an unknown column level is above every clearance, an
unknown clearance below every level (docs/security.md, "No read up")."""

from __future__ import annotations

import pytest

from govern.plan.model import LEVELS, clearance_rank, level_rank

UNDECLARED = ["", "zzz", "Restricted", "restricted\u200b", "restricted ", None, ["restricted"], 3, True]


def test_declared_levels_rank_the_same_for_columns_and_principals() -> None:
    assert [level_rank(level) for level in LEVELS] == [clearance_rank(level) for level in LEVELS] == [0, 1, 2, 3]


@pytest.mark.parametrize("value", UNDECLARED, ids=repr)
def test_an_undeclared_clearance_reads_no_level(value: object) -> None:
    assert all(clearance_rank(value) < level_rank(level) for level in LEVELS)


@pytest.mark.parametrize("level", ["", "zzz", "Restricted", "top-secret"], ids=repr)
def test_an_undeclared_column_level_is_above_every_clearance(level: str) -> None:
    assert all(level_rank(level) > clearance_rank(c) for c in LEVELS)
