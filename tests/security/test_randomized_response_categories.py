"""Finding: ``randomized_response`` passed values outside its ``categories`` through unchanged.

The mask kept a value with probability p whatever it was, and replaced it by a category
otherwise. A value that is not a category is itself the disclosure: in the demo the `phi`
categories list common diagnoses, so 80 % of HIV and substance-use patients were shown with
their real diagnosis, and every shown "HIV" was certainly true.

Attack: read ``patients`` as alice (analytics: diagnosis masked by randomized_response) and look
for diagnoses outside the category list. Both forms of the mask (Arrow and DuckDB SQL) must
replace out-of-category values every time.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from govern.policy.model import local_principal
from tests.mask.engines import FIXED_KEYS, connect, run_arrow, run_sql


def test_alice_never_sees_a_diagnosis_outside_the_categories(governor) -> None:
    alice = local_principal(governor.state.policy, "alice")
    plan = governor.plan(alice, "patients", "analytics")
    spec = plan.column("diagnosis").mask
    assert spec is not None and spec.function == "randomized_response"
    categories = set(spec.kwargs["categories"])
    shown = governor.read(alice, "patients", "analytics", columns=["diagnosis"]).reader.read_all()["diagnosis"]
    leaked = set(shown.drop_null().to_pylist()) - categories
    assert not leaked, f"diagnoses outside the categories shown to alice: {sorted(leaked)}"
    assert shown.null_count < len(shown)


def test_both_forms_replace_out_of_category_values() -> None:
    values = pa.array(["HIV", "Asthma", None, "Substance use disorder", "asthma", "Asthma "] * 50)
    table = pa.table({"x": values, "u": pa.array([str(i) for i in range(len(values))])})
    params = {"p": 0.9, "categories": ["Asthma", "Migraine"]}
    con = connect(FIXED_KEYS)
    try:
        for outcome in (run_arrow("randomized_response", params, table, FIXED_KEYS),
                        run_sql(con, "randomized_response", params, table, FIXED_KEYS)):
            out = outcome.array
            assert out is not None, outcome.error
            assert out.null_count == values.null_count
            assert pc.all(pc.is_in(out.drop_null(), pa.array(params["categories"]))).as_py(), out.to_pylist()[:12]
    finally:
        con.close()
