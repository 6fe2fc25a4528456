"""Column-name hints match whole tokens only: ``person_id`` holds no ``son``, ``phoneme`` no
``phone`` (the substring matching behind presidio #1063)."""

from __future__ import annotations

import pytest

from govern.monitor.names import hint_for, tokens


@pytest.mark.parametrize(("name", "expected"), [
    ("customerEmail_2", ("customer", "email", "2")),
    ("SSN", ("ssn",)),
    ("SSNNumber", ("ssn", "number")),
    ("customerIBAN", ("customer", "iban")),
    ("home-phone", ("home", "phone")),
    ("", ()),
])
def test_tokens(name: str, expected: tuple[str, ...]) -> None:
    assert tokens(name) == expected


@pytest.mark.parametrize(("name", "type_"), [
    # whole tokens, in any case style
    ("phone", "phone"), ("home_phone", "phone"), ("PhoneNumber", "phone"), ("mobile", "phone"),
    ("email", "email"), ("contactEmail", "email"), ("email_address", "email"),  # not "address"
    ("ssn", "ssn"), ("social_security_number", "ssn"), ("iban", "iban"), ("credit_card_number", "payment_card"),
    ("name", "person_name"), ("first_name", "person_name"), ("zip", "postal_code"), ("date_of_birth", "birth_date"),
    ("person_id", "person_identifier"), ("ip_address", "ip_address"),
    # never inside a word
    ("phoneme_count", None), ("reason", None), ("lesson", None), ("emailed", None), ("zipped_size", None),
    ("hotel", None), ("adobe_version", None), ("caribbean_region", None), ("passenger", None),
    # "name" counts only as the whole name
    ("product_name", None), ("file_name", None),
])
def test_hints_are_whole_tokens(name: str, type_: str | None) -> None:
    hint = hint_for(name)
    assert (hint.type if hint else None) == type_
