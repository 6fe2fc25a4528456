"""Accepted suggestions as a text edit of catalog.yaml: every other byte kept, the shapes a
steward's catalog can have, and no write that would break the policy or lose a concurrent edit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from govern.errors import InvalidRequest, PolicyError
from govern.monitor.catalog_patch import catalog_change
from govern.monitor.classify import Classification, ColumnClassification, Suggestion


def suggested(column: str, tag: str = "contact", level: str | None = "confidential", dataset: str = "patients",
              masked: bool = True) -> Classification:
    s = Suggestion("phone", "phone number", tag, masked, level, 0.8, ("evidence",))
    return Classification(dataset, 10, 10, 0, (ColumnClassification(column, "string", 10, None, (s,), "unclassified"),))


def columns_of(text: str, dataset: str) -> dict:
    return yaml.safe_load(text)["datasets"][dataset]["columns"]


def test_a_new_column_goes_after_the_last_one_of_its_dataset(policy_dir: Path) -> None:
    change = catalog_change(policy_dir, suggested("fax number"))
    added = [line for line in change.after.splitlines() if line not in change.before.splitlines()]
    assert added == ['      "fax number": {tags: [contact], level: confidential}  # govern classify: phone number, '
                     'confidence 0.80']
    assert columns_of(change.after, "patients")["fax number"] == {"tags": ["contact"], "level": "confidential"}
    assert list(columns_of(change.after, "patients"))[-1] == "fax number"
    assert change.diff().startswith("--- a/catalog.yaml\n+++ b/catalog.yaml\n")


@pytest.mark.parametrize("body", [
    "    format: parquet\n    level: internal\n",  # no columns key
    "    format: parquet\n    columns: {}   # none yet\n    level: internal\n",  # an empty flow mapping
])
def test_datasets_without_columns_get_a_block(tmp_path: Path, policy_dir: Path, body: str) -> None:
    catalog = policy_dir / "catalog.yaml"
    catalog.write_text(catalog.read_text() + "\n  calls:\n    location: patients.parquet\n" + body
                       + "# trailing comment\n")
    change = catalog_change(policy_dir, suggested("phone", dataset="calls", level=None))
    assert columns_of(change.after, "calls") == {"phone": {"tags": ["contact"]}}
    assert change.after.endswith("# trailing comment\n")
    change.write()
    assert catalog.read_text() == change.after


def test_a_flow_style_dataset_is_left_to_the_steward(policy_dir: Path) -> None:
    catalog = policy_dir / "catalog.yaml"
    catalog.write_text(catalog.read_text() + "  calls: {location: patients.parquet, format: parquet}\n")
    with pytest.raises(InvalidRequest, match="add the columns by hand"):
        catalog_change(policy_dir, suggested("phone", dataset="calls"))


def test_a_change_that_would_break_the_policy_is_not_written(policy_dir: Path) -> None:
    catalog = policy_dir / "catalog.yaml"
    before = catalog.read_text()
    change = catalog_change(policy_dir, suggested("phone", level="secret"))
    with pytest.raises(PolicyError, match="unknown level 'secret'"):
        change.write()
    assert catalog.read_text() == before


def test_a_catalog_edited_meanwhile_is_not_overwritten(policy_dir: Path) -> None:
    catalog = policy_dir / "catalog.yaml"
    change = catalog_change(policy_dir, suggested("phone"))
    catalog.write_text(catalog.read_text() + "# a steward's edit\n")
    with pytest.raises(InvalidRequest, match="changed since"):
        change.write()
    assert catalog.read_text().endswith("# a steward's edit\n")


def test_a_tag_without_a_mask_is_not_accepted(policy_dir: Path) -> None:
    change = catalog_change(policy_dir, suggested("phone", tag="payment_card", masked=False))
    assert change.empty and change.skipped == (
        ("phone", "tag 'payment_card' has no mask in masking.yaml (add one, then accept)"),)
