"""Sensitive-data discovery on generated columns: values decide, check digits keep lookalikes
out, name hints count as whole tokens and are overruled by values that contradict them, and
every suggested tag is one the policy masks."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from stdnum import iban, luhn
from stdnum.nl import bsn

from govern.monitor.classify import classify_table
from govern.policy.decide import Decider
from govern.policy.load import load_policy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def policy():
    p = load_policy(REPO / "policies")
    return p, Decider(p)


def digits(r: random.Random, n: int) -> str:
    return "".join(r.choice("0123456789") for _ in range(n))


def card(r: random.Random, valid: bool = True) -> str:
    body = "4" + digits(r, 14)
    check = int(luhn.calc_check_digit(body))
    return body + str(check if valid else (check + 1 + r.randrange(9)) % 10)


def an_iban(r: random.Random, valid: bool = True) -> str:
    bban = digits(r, 18)
    check = iban.calc_check_digits("DE00" + bban)
    return "DE" + (check if valid else f"{(int(check) + 1) % 97 + 2:02d}") + bban


def a_bsn(r: random.Random, valid: bool = True) -> str:
    while True:
        v = digits(r, 9)
        if bsn.is_valid(v) == valid:
            return v


def ssn(r: random.Random) -> str:
    return f"{r.randrange(1, 666):03d}-{r.randrange(1, 100):02d}-{r.randrange(1, 10000):04d}"


def column(gen, n: int = 2_000, seed: int = 1) -> pa.Array:
    r = random.Random(seed)
    return pa.array([gen(r) for _ in range(n)], pa.string())


def classify(policy, **columns: pa.Array):
    p, d = policy
    return classify_table(pa.table(columns), "generated", p, d)


def best(result, name: str) -> str | None:
    b = result.column(name).best
    return b.type if b else None


def test_check_digits_tell_valid_numbers_from_lookalikes(policy) -> None:
    result = classify(policy, a=column(card), b=column(lambda r: card(r, False)), c=column(an_iban),
                      d=column(lambda r: an_iban(r, False)), e=column(a_bsn), f=column(lambda r: a_bsn(r, False)))
    assert [best(result, n) for n in "abcdef"] == ["payment_card", None, "iban", None, "national_id", None]
    assert result.column("e").best.variant == "nl.bsn"


def test_values_decide_without_a_name(policy) -> None:
    result = classify(policy, c1=column(ssn), c2=column(lambda r: f"user{r.randrange(999)}@example.org"),
                      c3=column(lambda r: f"+44 20 7946 {r.randrange(10_000):04d}"),
                      c4=column(lambda r: f"{r.randrange(1, 20)}.{r.randrange(10)}.{r.randrange(10)}"),
                      c5=column(lambda r: f"write to x{r.randrange(99)}@example.org today"))
    assert [best(result, f"c{i}") for i in range(1, 6)] == ["ssn", "email", "phone", None, None]
    confident = result.column("c1").best
    assert confident.confidence >= 0.95 and confident.level == "restricted" and confident.tag == "ssn"


def test_a_weak_shape_counts_only_with_a_name_hint(policy) -> None:
    bare = column(lambda r: ssn(r).replace("-", ""))
    result = classify(policy, ssn=bare, order_id=bare)
    assert best(result, "ssn") == "ssn" and best(result, "order_id") is None


def test_values_overrule_a_name_they_contradict(policy) -> None:
    result = classify(policy, email_sent_at=column(lambda r: f"2024-01-{r.randrange(1, 29):02d} 10:00:00"),
                      ssn_verified=column(lambda r: r.choice(["yes", "no"])),
                      phone_count=pa.array(range(2_000), pa.int64()),
                      phone=pa.nulls(2_000, pa.string()))
    assert [best(result, n) for n in ("email_sent_at", "ssn_verified", "phone_count")] == [None, None, None]
    only_name = result.column("phone").best  # no values at all: the name alone, and it says so
    assert only_name.type == "phone" and only_name.confidence == 0.6
    assert only_name.evidence == ("the column name has the word(s) 'phone'",)


def test_suggested_tags_are_masked_by_the_policy(policy) -> None:
    result = classify(policy, cards=column(card), mail=column(lambda r: f"u{r.randrange(99)}@example.com"),
                      phone=column(lambda r: f"+1-555-{r.randrange(200, 999)}-{r.randrange(10_000):04d}"))
    # no `payment_card` tag in the demo policy: its parent-most masked choice, pii (redact)
    assert [(s.tag, s.masked) for s in (result.column(n).best for n in ("cards", "mail", "phone"))] == [
        ("pii", True), ("contact", True), ("contact", True)]


def test_a_policy_without_a_mask_for_the_type_gets_an_unmasked_suggestion(policy_dir: Path) -> None:
    masking = policy_dir / "masking.yaml"
    masking.write_text(masking.read_text().replace("  pii: {mask: redact}\n", ""))
    (policy_dir / "policy.csv").write_text((policy_dir / "policy.csv").read_text()
                                           .replace("p, clinician, tag:pii, unmask, treatment, allow\n", ""))
    p = load_policy(policy_dir)
    result = classify_table(pa.table({"cards": column(card)}), "generated", p, Decider(p))
    s = result.column("cards").best
    assert (s.type, s.tag, s.masked) == ("payment_card", "payment_card", False)


def test_the_sample_is_bounded_and_seeded(demo_world, governor) -> None:
    from govern.monitor.classify import classify_dataset

    state = governor.state
    runs = [classify_dataset(governor.dataset("patients"), "patients", state.policy, state.decider, sample=500, seed=s)
            for s in (3, 3, 4)]
    assert runs[0].sample_rows == 500 and runs[0].rows == 2_000
    assert runs[0] == runs[1]
    assert all(c.sampled <= 500 for c in runs[2].columns)


def test_classification_holds_no_sampled_value(demo_world, governor, leaks) -> None:
    import json

    from govern.monitor.classify import classify_dataset

    state = governor.state
    result = classify_dataset(governor.dataset("patients"), "patients", state.policy, state.decider)
    leaks.assert_none(json.dumps(result.to_dict()), repr(result))


@pytest.fixture
def demo_copy(demo_world, tmp_path: Path) -> Path:
    d = tmp_path / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    return d
