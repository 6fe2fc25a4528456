"""Plan-bound tickets: only the gateway's key ring makes them; kind, expiry and seal are checked."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govern.errors import AuthenticationFailed
from govern.identity.principal import Principal
from govern.identity.tickets import Ticket, TicketExpired, issue, looks_like_ticket, open_ticket
from govern.mask.keys import KeyRing

KEYS = KeyRing({"k1": b"a" * 32, "k2": b"b" * 32}, "k1")
TICKET = Ticket(kind="fragment", principal=Principal("bob", {"clearance": "internal"}, source="api-key"),
                purpose="model-training", dataset="patients", plan_hash="ab" * 32, data_version="0123456789abcdef",
                subject="part-0.parquet#0", expires=1_000, extra={"row_group": 0})


def test_a_ticket_opens_to_what_was_sealed() -> None:
    text = issue(TICKET, KEYS)
    assert looks_like_ticket(text) and text.startswith("gt1.k1.")
    assert open_ticket(text, KEYS, kind="fragment", now=999) == TICKET


def test_a_ticket_is_refused_at_its_expiry() -> None:
    text = issue(TICKET, KEYS)
    with pytest.raises(TicketExpired) as info:
        open_ticket(text, KEYS, kind="fragment", now=1_000)
    assert info.value.status == 401 and info.value.extra["reason"] == "expired"


def test_a_ticket_of_another_kind_opens_nothing() -> None:
    with pytest.raises(AuthenticationFailed) as info:
        open_ticket(issue(TICKET, KEYS), KEYS, kind="share-file", now=0)
    assert info.value.detail == "invalid ticket"


def test_another_ring_cannot_make_or_open_tickets() -> None:
    other = KeyRing({"k1": b"c" * 32}, "k1")
    with pytest.raises(AuthenticationFailed) as info:
        open_ticket(issue(TICKET, other), KEYS, kind="fragment", now=0)
    assert info.value.extra["reason"] == "bad seal"


def test_a_rotated_ring_still_opens_tickets_of_its_older_keys() -> None:
    text = issue(TICKET, KEYS)
    assert open_ticket(text, KEYS.with_active("k2"), kind="fragment", now=0) == TICKET
    with pytest.raises(AuthenticationFailed):
        open_ticket(text, KeyRing({"k2": b"b" * 32}, "k2"), kind="fragment", now=0)  # k1 retired


def test_a_forged_payload_with_a_raised_clearance_is_refused() -> None:
    text = issue(TICKET, KEYS)
    prefix, key_id, body, mac = text.split(".")
    forged_ticket = Ticket(**{**TICKET.__dict__, "principal": Principal("bob", {"clearance": "restricted"},
                                                                          source="api-key")})
    forged_body = issue(forged_ticket, KEYS.with_active("k1")).split(".")[2]
    assert forged_body != body
    with pytest.raises(AuthenticationFailed):
        open_ticket(".".join([prefix, key_id, forged_body, mac]), KEYS, kind="fragment", now=0)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_changed_character_breaks_the_seal(data) -> None:
    text = issue(TICKET, KEYS)
    i = data.draw(st.integers(0, len(text) - 1))
    c = data.draw(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."))
    changed = text[:i] + c + text[i + 1:]
    if changed == text:
        return
    try:
        opened = open_ticket(changed, KEYS, kind="fragment", now=0)
    except AuthenticationFailed:
        return
    # base64 padding bits: a change that decodes to the same bytes opens the same ticket
    assert opened == TICKET


@pytest.mark.parametrize("text", ["", "gt1.", "gt1.k1.x", "gt1.nokey.e30.AAAA", "gt1.k1.e30.%%%", "x" * 10_000])
def test_malformed_tickets_are_one_clear_refusal(text: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        open_ticket(text, KEYS, kind="fragment", now=0)
    assert info.value.detail == "invalid ticket"
