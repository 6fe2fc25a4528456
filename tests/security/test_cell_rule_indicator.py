"""Finding: the demo policy leaked what it protects through a cell rule.

The example rule ``sensitive-charges`` nulled ``charges`` where ``diagnosis IN ('HIV',
'Substance use disorder')``, for principals who see ``diagnosis`` masked (alice) or not at all
(bob: withheld by a deny). Whether a cell is masked is visible, so ``WHERE charges IS NULL``
selected exactly the HIV and substance-use patients: the masked cell became an indicator of the
hidden column.

Attack: read ``patients`` as each principal the rule applies to and check whether the rows with a
masked ``charges`` can be told apart by anything but the columns that principal sees in the
clear. The example policy must not do this, and ``govern policy check`` must warn
(``file:line: warning: …``, exit 0) about a rule whose ``when`` references a column that is
masked or withheld for some principal it applies to.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from govern.policy.model import local_principal
from tests.conftest import EXAMPLE_POLICIES

OLD_RULE = {"name": "sensitive-charges", "dataset": "patients", "column": "charges",
            "when": "diagnosis IN ('HIV', 'Substance use disorder')", "mask": None}


def govern_check(directory: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "govern"
    return subprocess.run([str(exe), "policy", "check", str(directory)], capture_output=True, text=True, timeout=120)


def with_old_rule(policy_dir: Path) -> int:
    """Put the old demo rule back into masking.yaml; return the line its entry starts on."""
    masking = policy_dir / "masking.yaml"
    doc = yaml.safe_load(masking.read_text())
    doc["cell_rules"] = [OLD_RULE]
    masking.write_text(yaml.safe_dump(doc, sort_keys=False))
    return next(i for i, line in enumerate(masking.read_text().splitlines(), 1) if "sensitive-charges" in line)


def test_policy_check_warns_about_the_old_rule(policy_dir: Path) -> None:
    line = with_old_rule(policy_dir)
    out = govern_check(policy_dir)
    assert out.returncode == 0, out.stderr  # a warning, not a failure
    warnings = [w for w in (out.stdout + out.stderr).splitlines() if ": warning: " in w]
    assert any(w.startswith(f"{policy_dir / 'masking.yaml'}:{line}: warning: cell rule 'sensitive-charges'")
               and "'diagnosis'" in w for w in warnings), out.stdout + out.stderr


def test_the_example_policy_has_no_such_warning() -> None:
    out = govern_check(EXAMPLE_POLICIES)
    assert out.returncode == 0, out.stderr
    assert "warning:" not in out.stdout + out.stderr


# carol sees email in the clear, unique per patient: any pattern is "a function of" it, so she
# would prove nothing here; alice and bob see only region in the clear.
@pytest.mark.parametrize("who, purpose", [("alice", "analytics"), ("bob", "model-training")])
def test_a_masked_charge_says_nothing_the_principal_cannot_see(governor, demo_world, who: str, purpose: str) -> None:
    """Rows whose charges the cell rule masks must be exactly predictable from the columns the
    principal receives unmasked (here: region); nothing hidden may separate them."""
    principal = local_principal(governor.state.policy, who)
    plan = governor.plan(principal, "patients", purpose)
    assert [r.column for r in plan.cell_rules] == ["charges"]  # the rule applies to this principal
    clear = [c.name for c in plan.visible_columns if c.action == "keep"]
    read = governor.read(principal, "patients", purpose, columns=["patient_id", *clear, "charges"]).reader.read_all()
    raw = pq.read_table(demo_world.directory / "data" / "patients.parquet", columns=["patient_id", "charges"])
    assert raw["charges"].null_count == 0  # so every NULL below comes from the cell rule
    masked = pc.is_null(read["charges"])
    if who == "bob":  # bob reads every region: the rule fires for him (alice's EU rows may never match)
        assert pc.any(masked).as_py()
    groups = pa.table({**{c: read[c] for c in clear}, "masked": masked}).group_by(clear).aggregate(
        [("masked", "min"), ("masked", "max")])
    mixed = groups.filter(pc.not_equal(groups["masked_min"], groups["masked_max"]))
    assert mixed.num_rows == 0, f"{who}: masked charges are not a function of {clear}: {mixed.to_pylist()[:3]}"
