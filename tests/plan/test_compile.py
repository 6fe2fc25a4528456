"""The plan compiler: every semantic rule of ARCHITECTURE §3, each with a positive and a
negative case, on small policies written to tmp paths."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from govern.errors import AccessDenied, PolicyError, PurposeNotEntitled
from govern.identity.principal import Principal
from govern.plan.compile import compile_plan
from govern.policy.decide import Decider
from govern.policy.load import load_policy

MODEL = (Path(__file__).resolve().parents[2] / "policies" / "model.conf").read_text()

SCHEMA = pa.schema([
    ("id", pa.int64()), ("email", pa.string()), ("ssn", pa.string()), ("region", pa.string()),
    ("amount", pa.float64()), ("secret_note", pa.string()),
])

CATALOG = """
datasets:
  t:
    location: t.parquet
    level: internal
    privacy_unit: id
    columns:
      id: {}
      email: {tags: [contact]}
      ssn: {tags: [ssn, contact], level: restricted}
      region: {}
      amount: {tags: [money]}
"""

MASKING = """
tags:
  contact: {mask: email_domain}
  ssn: {mask: show_last, params: {n: 4}}
  money: {mask: noise, params: {scale: 10}}
  pii: {mask: redact}
cell_rules: []
row_filters: []
"""

PRINCIPALS = """
attributes: [regions, clearance]
principals:
  u: {attributes: {clearance: restricted, regions: [EU]}}
  low: {attributes: {clearance: internal}}
  nobody: {attributes: {}}
"""


def build(tmp_path: Path, rules: str, *, masking: str = MASKING, catalog: str = CATALOG,
          principals: str = PRINCIPALS):
    d = tmp_path / "p"
    d.mkdir(exist_ok=True)
    (d / "model.conf").write_text(MODEL)
    (d / "policy.csv").write_text(rules.strip() + "\n")
    (d / "catalog.yaml").write_text(catalog)
    (d / "masking.yaml").write_text(masking)
    (d / "principals.yaml").write_text(principals)
    policy = load_policy(d)
    return policy, Decider(policy)


def plan_for(policy, decider, who="u", purpose="p1", schema=SCHEMA):
    attrs = policy.principals[who].attributes
    return compile_plan(policy, decider, Principal(who, attrs), purpose, "t", schema, key_id="k1")


def actions(plan) -> dict[str, str]:
    return {c.name: (c.mask.function if c.mask else c.action) for c in plan.columns}


BASE = "p, u, dataset:t, read, p1, allow\np, low, dataset:t, read, p1, allow\n"


# -- deny beats allow; no rule means deny --------------------------------------------------------

def test_deny_on_tag_withholds_column_despite_dataset_grant(tmp_path):
    policy, d = build(tmp_path, BASE + "p, u, tag:money, read, p1, deny")
    plan = plan_for(policy, d)
    assert plan.column("amount").action == "withhold"
    assert plan.column("amount").reason.code == "denied-by-rule"
    assert plan.column("amount").reason.source == "policy.csv:3"


def test_without_the_deny_the_column_is_visible(tmp_path):
    policy, d = build(tmp_path, BASE)
    assert plan_for(policy, d).column("amount").action == "mask"


def test_deny_on_dataset_beats_allow(tmp_path):
    policy, d = build(tmp_path, BASE + "p, u, dataset:t, read, p1, deny")
    with pytest.raises(AccessDenied) as info:
        plan_for(policy, d)
    assert "denied by rule" in info.value.detail


def test_no_rule_means_deny(tmp_path):
    policy, d = build(tmp_path, "p, u, dataset:t, unmask, p1, allow")  # entitled to p1, no read
    with pytest.raises(AccessDenied) as info:
        plan_for(policy, d)
    assert "no rule grants 'read'" in info.value.detail


# -- purposes ------------------------------------------------------------------------------------

def test_purpose_hierarchy_parent_grant_serves_child(tmp_path):
    policy, d = build(tmp_path, "p, u, dataset:t, read, research, allow\ng3, training, research")
    assert plan_for(policy, d, purpose="training").purpose == "training"


def test_purpose_hierarchy_child_grant_does_not_serve_parent(tmp_path):
    policy, d = build(tmp_path, "p, u, dataset:t, read, training, allow\ng3, training, research")
    with pytest.raises(PurposeNotEntitled) as info:
        plan_for(policy, d, purpose="research")
    assert info.value.extra["purposes"] == ["training"]


def test_unentitled_purpose_is_refused_with_the_usable_purposes(tmp_path):
    policy, d = build(tmp_path, BASE)
    with pytest.raises(PurposeNotEntitled) as info:
        plan_for(policy, d, purpose="marketing")
    assert info.value.extra["purposes"] == ["p1"]


# -- roles and resource groups ---------------------------------------------------------------------

def test_role_hierarchy_and_dataset_groups(tmp_path):
    rules = "g, u, analyst\ng, analyst, staff\ng2, dataset:t, group:all\np, staff, group:all, read, p1, allow"
    policy, d = build(tmp_path, rules)
    assert plan_for(policy, d).column("region").action == "keep"
    policy, d = build(tmp_path, "g, u, analyst\ng2, dataset:t, group:all\np, staff, group:all, read, p1, allow\n"
                                "p, staff, dataset:t, unmask, p1, allow\ng, low, staff")
    with pytest.raises(PurposeNotEntitled):
        plan_for(policy, d)  # u is an analyst, not staff: no rule grants u anything


# -- most restrictive mask among several tags ------------------------------------------------------

def test_column_with_several_tags_gets_the_most_restrictive_mask(tmp_path):
    masking = MASKING.replace("contact: {mask: email_domain}", "contact: {mask: hash}")
    policy, d = build(tmp_path, BASE, masking=masking)
    col = plan_for(policy, d).column("ssn")
    assert col.mask is not None and col.mask.function == "hash"  # hash (rank 2) < show_last (rank 9)
    assert "most restrictive of" in col.reason.detail


def test_unmasking_one_tag_leaves_the_other_tags_mask(tmp_path):
    masking = MASKING.replace("contact: {mask: email_domain}", "contact: {mask: hash}")
    policy, d = build(tmp_path, BASE + "p, u, tag:contact, unmask, p1, allow", masking=masking)
    col = plan_for(policy, d).column("ssn")
    assert col.mask is not None and col.mask.function == "show_last"
    assert plan_for(policy, d).column("email").action == "keep"


def test_deny_unmask_beats_allow_unmask(tmp_path):
    rules = BASE + "p, u, tag:contact, unmask, p1, allow\np, u, column:t.email, unmask, p1, deny"
    policy, d = build(tmp_path, rules)
    assert plan_for(policy, d).column("email").mask.function == "email_domain"


def test_tag_hierarchy_unmask_and_mask_inheritance(tmp_path):
    catalog = CATALOG.replace("email: {tags: [contact]}", "email: {tags: [work_email]}")
    rules = BASE + "g2, tag:work_email, tag:pii"
    policy, d = build(tmp_path, rules, catalog=catalog)
    col = plan_for(policy, d).column("email")
    assert col.mask.function == "redact" and "via tag 'pii'" in col.reason.detail
    policy, d = build(tmp_path, rules + "\np, u, tag:pii, unmask, p1, allow", catalog=catalog)
    assert plan_for(policy, d).column("email").action == "keep"


# -- clearance: no read up -------------------------------------------------------------------------

def test_column_above_clearance_is_withheld(tmp_path):
    policy, d = build(tmp_path, BASE)
    col = plan_for(policy, d, who="low").column("ssn")
    assert col.action == "withhold" and col.reason.code == "clearance"


def test_column_at_clearance_is_visible(tmp_path):
    policy, d = build(tmp_path, BASE)
    assert plan_for(policy, d, who="u").column("ssn").action == "mask"


def test_unmask_does_not_override_clearance(tmp_path):
    policy, d = build(tmp_path, BASE + "p, low, tag:ssn, unmask, p1, allow\np, low, tag:contact, unmask, p1, allow")
    assert plan_for(policy, d, who="low").column("ssn").action == "withhold"


def test_missing_clearance_means_public(tmp_path):
    policy, d = build(tmp_path, BASE + "p, nobody, dataset:t, read, p1, allow")
    with pytest.raises(AccessDenied):  # every column is at least internal
        plan_for(policy, d, who="nobody")


@pytest.mark.parametrize("clearance", ["zzz", "Restricted", "restricted\u200b", ""], ids=repr)
def test_an_undeclared_clearance_ranks_below_public(tmp_path, clearance):
    catalog = CATALOG.replace("      region: {}", "      region: {level: public}")
    policy, d = build(tmp_path, BASE, catalog=catalog)
    public = compile_plan(policy, d, Principal("u", {"clearance": "public"}), "p1", "t", SCHEMA, key_id="k1")
    assert public.visible_names == ["region"]  # the control: `public` reads the public column
    with pytest.raises(AccessDenied, match="no column"):  # below public: not even that one
        compile_plan(policy, d, Principal("u", {"clearance": clearance}), "p1", "t", SCHEMA, key_id="k1")


# -- schema drift ----------------------------------------------------------------------------------

def test_unclassified_column_is_withheld(tmp_path):
    policy, d = build(tmp_path, BASE)
    col = plan_for(policy, d).column("secret_note")
    assert col.action == "withhold" and col.reason.code == "unclassified"


def test_classified_column_is_not_withheld(tmp_path):
    catalog = CATALOG + "      secret_note: {}\n"
    policy, d = build(tmp_path, BASE, catalog=catalog)
    assert plan_for(policy, d).column("secret_note").action == "keep"


# -- cell rules ------------------------------------------------------------------------------------

CELL = MASKING.replace("cell_rules: []", """cell_rules:
  - name: big
    dataset: t
    column: region
    when: "amount > 1000"
    mask: redact""")


def test_cell_rule_is_in_the_plan(tmp_path):
    policy, d = build(tmp_path, BASE, masking=CELL)
    plan = plan_for(policy, d)
    assert [(c.column, c.when, c.mask.function) for c in plan.cell_rules] == [("region", '"amount" > 1000', "redact")]
    assert plan.column("region").action == "keep"


def test_cell_rule_is_lifted_by_column_unmask(tmp_path):
    policy, d = build(tmp_path, BASE + "p, u, column:t.region, unmask, p1, allow", masking=CELL)
    assert plan_for(policy, d).cell_rules == ()


def test_cell_rule_skipped_when_column_already_masked_more_strictly(tmp_path):
    masking = CELL.replace("column: region", "column: email").replace("mask: redact", "mask: show_first")
    policy, d = build(tmp_path, BASE, masking=masking)
    # email is email_domain (rank 8); show_first (rank 9) is weaker: no cell rule needed
    assert plan_for(policy, d).cell_rules == ()


# -- row filters -----------------------------------------------------------------------------------

FILTERED = MASKING.replace("row_filters: []", """row_filters:
  - name: mine
    dataset: t
    filter: "region IN subject.regions\"""")


def test_row_filter_binds_subject_attributes(tmp_path):
    policy, d = build(tmp_path, BASE, masking=FILTERED)
    assert plan_for(policy, d).row_filter_sql == """("region" IN ('EU'))"""


def test_row_filter_injection_attempt_stays_a_literal(tmp_path):
    principals = PRINCIPALS.replace("regions: [EU]", "regions: [\"EU' OR 1=1 --\"]")
    policy, d = build(tmp_path, BASE, masking=FILTERED, principals=principals)
    sql = plan_for(policy, d).row_filter_sql
    assert sql == """("region" IN ('EU'' OR 1=1 --'))"""


def test_missing_list_attribute_filters_everything(tmp_path):
    policy, d = build(tmp_path, BASE, masking=FILTERED)
    assert plan_for(policy, d, who="low").row_filter_sql == "(FALSE)"


def test_bypass_row_filter_removes_it(tmp_path):
    policy, d = build(tmp_path, BASE + "p, u, dataset:t, bypass_row_filter, p1, allow", masking=FILTERED)
    assert plan_for(policy, d).row_filters == ()


# -- the plan as data --------------------------------------------------------------------------------

def test_plan_is_json_with_a_stable_hash(tmp_path):
    policy, d = build(tmp_path, BASE, masking=FILTERED)
    a, b = plan_for(policy, d), plan_for(policy, Decider(policy))
    assert a.hash == b.hash and len(a.hash) == 64
    body = json.loads(a.to_json())
    assert body["hash"] == a.hash
    assert {c["name"]: c["action"] for c in body["columns"]}["secret_note"] == "withhold"
    assert plan_for(policy, d, who="low").hash != a.hash


def test_mask_type_mismatch_withholds_with_reason(tmp_path):
    catalog = CATALOG.replace("amount: {tags: [money]}", "amount: {tags: [ssn]}")
    policy, d = build(tmp_path, BASE, catalog=catalog)
    col = plan_for(policy, d).column("amount")
    assert col.action == "withhold" and col.reason.code == "mask-not-applicable"


# -- token domains ---------------------------------------------------------------------------------

TOKENS = MASKING.replace("  pii: {mask: redact}", "  pii: {mask: redact}\n  ident: {mask: tokenize}\n"
                         "  shared: {mask: tokenize, params: {domain: person}}")


def test_tokenize_gets_its_domain_in_the_plan(tmp_path):
    """Without a `domain` a column's tokens are its own (DATASET.COLUMN); a steward's domain is
    shared by every column whose tag names it. The plan carries the domain, so engines agree."""
    catalog = CATALOG.replace("      id: {}", "      id: {tags: [ident]}").replace(
        "      region: {}", "      region: {tags: [shared]}")
    policy, d = build(tmp_path, BASE, masking=TOKENS.replace("cell_rules: []", """cell_rules:
  - {name: t, dataset: t, column: email, when: "amount > 1000", mask: tokenize}"""), catalog=catalog)
    plan = plan_for(policy, d)
    assert plan.column("id").mask.kwargs == {"domain": "t.id"}
    assert plan.column("region").mask.kwargs == {"domain": "person"}
    assert plan.cell_rules[0].mask.kwargs == {"domain": "t.email"}
    assert plan.token_domains() == {"t.id": ("id",), "person": ("region",), "t.email": ("email",)}


def test_withheld_or_unmasked_columns_give_no_token_domain(tmp_path):
    catalog = CATALOG.replace("      id: {}", "      id: {tags: [ident]}").replace(
        "      region: {}", "      region: {tags: [shared], level: restricted}")
    policy, d = build(tmp_path, BASE + "p, low, tag:ident, unmask, p1, allow", masking=TOKENS, catalog=catalog)
    assert plan_for(policy, d, who="low").token_domains() == {}  # id in the clear, region above clearance
    assert plan_for(policy, d).token_domains() == {"t.id": ("id",), "person": ("region",)}


@pytest.mark.parametrize("domain", ["''", "'a b'", "7", "[x]", "'" + "x" * 129 + "'"])
def test_a_domain_must_be_a_plain_name(tmp_path, domain):
    masking = TOKENS.replace("{domain: person}", "{domain: " + domain + "}")
    with pytest.raises(PolicyError, match="domain must be"):
        build(tmp_path, BASE, masking=masking)
