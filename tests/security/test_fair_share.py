"""Finding: one principal could take every read slot.

Attack: a pipeline opens as many reads as there are slots (``max_concurrent_reads``) and keeps
them open; every other principal's reads then wait and fail. Now a principal holds at most
``max_reads_per_principal`` slots (half of them by default); past its share it gets ``503
overloaded`` while others are still served.
"""

from __future__ import annotations

from tests.pgwire.raw import Raw, bind, cstr, execute, fields, parse


def _hold_a_slot(port: int, world, who: str, purpose: str) -> Raw:
    """A wire session with a suspended portal inside a transaction: it keeps its read slot."""
    raw = Raw(port)
    raw.login(who, world.keys[who], purpose)
    raw.send(b"Q", cstr("begin"))
    raw.until_ready()
    raw.send(b"P", parse("", "select * from encounters"))
    raw.send(b"B", bind("held", "", []))
    raw.send(b"E", execute("held", 1))
    raw.send(b"S")
    assert b"s" in [k for k, _ in raw.until_ready()]
    return raw


def _query(port: int, world, who: str, purpose: str) -> dict[str, str] | None:
    raw = Raw(port)
    raw.login(who, world.keys[who], purpose)
    raw.send(b"Q", cstr("select count(*) from encounters"))
    messages = raw.until_ready()
    raw.close()
    errors = [fields(body) for kind, body in messages if kind == b"E"]
    return errors[0] if errors else None


def test_one_principal_cannot_take_every_slot(wire, world) -> None:
    port, _gw = wire(max_concurrent_reads=4, queue_timeout=0.5)
    held = [_hold_a_slot(port, world, "bob", "research") for _ in range(2)]  # bob's share: 2 of 4
    try:
        refused = _query(port, world, "bob", "research")
        assert refused is not None and refused["C"] == "53300", refused  # past his share
        assert _query(port, world, "alice", "analytics") is None  # others are still served
    finally:
        for raw in held:
            raw.close()
