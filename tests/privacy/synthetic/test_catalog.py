"""The `synthesizer:` catalog entry and the column roles it leads to (pure, no SDV needed)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from govern.policy.load import load_policy, read_policy
from govern.privacy.synthetic.roles import column_roles, tag_parents_of
from govern.privacy.synthetic.spec import SynthesizerSpec, spec_of
from tests.conftest import edit

PATIENTS = pa.schema([("patient_id", pa.int64()), ("name", pa.string()), ("email", pa.string()),
                      ("ssn", pa.string()), ("birth_date", pa.date32()), ("zip", pa.string()),
                      ("region", pa.string()), ("diagnosis", pa.string()), ("charges", pa.float64()),
                      ("phone", pa.string())])


def _with_synthesizer(policy_dir: Path, block: str) -> None:
    edit(policy_dir / "catalog.yaml", "    description: One row per hospital encounter.\n",
         "    description: One row per hospital encounter.\n" + block)


def test_the_demo_catalog_declares_a_gaussian_copula(policy_dir: Path) -> None:
    policy = load_policy(policy_dir)
    spec = spec_of(policy.datasets["patients"])
    assert spec.type == "gaussian_copula" and spec.generated == {"zip": "postcode"}
    assert spec_of(policy.datasets["encounters"]) == SynthesizerSpec()  # no entry: the default


def test_a_full_entry_is_parsed(policy_dir: Path) -> None:
    _with_synthesizer(policy_dir, """\
    synthesizer:
      type: ctgan
      params: {epochs: 5, batch_size: 100, pac: 10, generator_dim: [64, 64], enforce_rounding: false}
      generate: {department: job}
""")
    spec = spec_of(load_policy(policy_dir).datasets["encounters"])
    assert spec.type == "ctgan"
    assert spec.kwargs == {"batch_size": 100, "enforce_rounding": False, "epochs": 5,
                           "generator_dim": [64, 64], "pac": 10}
    assert spec.to_dict()["generate"] == {"department": "job"}


@pytest.mark.parametrize(("block", "offset", "message"), [
    # title: unknown synthesizer type
    ("    synthesizer: {type: gan}\n", 0, "type must be one of gaussian_copula, ctgan, copulagan, tvae"),
    # title: unknown field
    ("    synthesizer:\n      kind: ctgan\n", 1, "unknown field 'kind'"),
    # title: parameter of another synthesizer
    ("    synthesizer:\n      params:\n        epochs: 10\n", 2, "unknown parameter 'epochs' for gaussian_copula"),
    # title: GPU is never configurable
    ("    synthesizer:\n      type: tvae\n      params:\n        enable_gpu: true\n", 3, "enable_gpu is not configurable"),
    # title: wrong type of value
    ("    synthesizer:\n      type: ctgan\n      params:\n        epochs: many\n", 3, "epochs must be a positive integer"),
    # title: distribution name
    ("    synthesizer:\n      params:\n        default_distribution: cauchy\n", 2, "must be one of norm, beta"),
    # title: CTGAN's batch must split into pac groups
    ("    synthesizer:\n      type: ctgan\n      params: {batch_size: 101}\n", 2, "multiple of pac"),
    # title: generate names a column that is not catalogued
    ("    synthesizer:\n      generate:\n        nope: email\n", 2, "generate names 'nope'"),
    # title: generate with a sdtype that is not a function name
    ("    synthesizer:\n      generate:\n        region: 'City Name'\n", 2, "must be a Faker function name"),
    # title: not a mapping at all
    ("    synthesizer: [ctgan]\n", 0, "synthesizer of 'encounters' must be a mapping"),
])
def test_problems_are_reported_with_their_line(policy_dir: Path, block: str, offset: int, message: str) -> None:
    """``offset``: the line of the problem within ``block`` (0 = its first line)."""
    lines = (policy_dir / "catalog.yaml").read_text().splitlines()
    first = lines.index("    description: One row per hospital encounter.") + 2  # 1-based line of the block
    _with_synthesizer(policy_dir, block)
    policy, problems = read_policy(policy_dir)
    assert policy is None
    found = [p for p in problems if message in p.message]
    assert found, [str(p) for p in problems]
    assert found[0].file == "catalog.yaml" and found[0].line == first + offset, str(found[0])


def test_roles_of_the_demo_patients(policy_dir: Path) -> None:
    policy = load_policy(policy_dir)
    entry = policy.datasets["patients"]
    roles = {r.name: r for r in column_roles(entry, PATIENTS, spec_of(entry), tag_parents_of(policy))}
    # direct identifiers are generated, never learned, each with a Faker sdtype (integers: "id")
    assert {n: (r.role, r.kind) for n, r in roles.items() if r.role == "generate"} == {
        "patient_id": ("generate", "id"), "name": ("generate", "name"), "email": ("generate", "email"),
        "ssn": ("generate", "ssn"), "zip": ("generate", "postcode")}
    assert "tag 'identifier'" in roles["patient_id"].reason and "generate" in roles["zip"].reason
    assert {n: r.kind for n, r in roles.items() if r.role == "model"} == {
        "birth_date": "date", "region": "categorical", "diagnosis": "categorical", "charges": "numerical"}
    assert roles["phone"].role == "exclude" and "unclassified" in roles["phone"].reason


def test_a_tag_below_pii_makes_a_direct_identifier(policy_dir: Path) -> None:
    edit(policy_dir / "policy.csv", "g2, tag:ssn, tag:pii", "g2, tag:ssn, tag:pii\ng2, tag:financial, tag:contact")
    policy = load_policy(policy_dir)
    entry = policy.datasets["patients"]
    roles = {r.name: r for r in column_roles(entry, PATIENTS, spec_of(entry), tag_parents_of(policy))}
    # charges (tag financial, now under contact < pii) is a float: it cannot be generated, so it is left out
    assert roles["charges"].role == "exclude" and "financial" in roles["charges"].reason
