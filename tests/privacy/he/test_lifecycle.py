"""Keys rotate and retire (CLI), policy changes and rate limits reach views already handed out."""

from __future__ import annotations

import json
import sqlite3

from click.testing import CliRunner

from govern.cli import main
from govern.policy.load import load_policy
from tests.gateway import World, make_client

SUM = {"op": "sum", "column": "charges"}


def _view(client, world: World) -> dict:
    r = client.post("/v1/datasets/patients/encrypted", headers={**world.auth("bob"), "X-Purpose": "research"},
                    json={"columns": ["charges"]})
    assert r.status_code == 200, r.text
    from govern.privacy.he import container

    return container.read(r.content).header


def _release(client, world: World, header: dict, computation: dict = SUM):
    return client.post("/v1/he/release", headers={**world.auth("bob"), "X-Purpose": "research"},
                       json={"view_token": header["token"], "computation": computation, "epsilon": 0.25})


def _outcomes(world: World, action: str) -> list[tuple[str, int]]:
    with sqlite3.connect(world.directory / "state" / "audit.db") as con:
        return con.execute("SELECT outcome, status FROM audit_log WHERE action = ? ORDER BY seq", (action,)).fetchall()


def test_rotation_keeps_old_views_releasable_until_retired(own_world: World) -> None:
    cli = CliRunner()
    config = ["--config", str(own_world.config)]
    with make_client(own_world) as client:
        old = _view(client, own_world)
        assert old["key_id"] == "k1"
        rotated = cli.invoke(main, ["he", "rotate", "patients", *config])
        assert rotated.exit_code == 0 and "new active key k2" in rotated.output
        new = _view(client, own_world)
        assert new["key_id"] == "k2"  # new views use the new key at once
        assert _release(client, own_world, old).status_code == 200  # k1 still live
        refused = cli.invoke(main, ["he", "retire", "patients", "k2", *config])
        assert refused.exit_code != 0 and "rotate first" in refused.output
        assert cli.invoke(main, ["he", "retire", "patients", "k1", *config]).exit_code == 0
        gone = _release(client, own_world, old)
        assert gone.status_code == 400 and "retired" in gone.json()["detail"]
        assert _release(client, own_world, new).status_code == 200
        listed = json.loads(cli.invoke(main, ["he", "keys", "patients", "--format", "json", *config]).output)
        assert [(k["key_id"], k["active"], bool(k["retired"])) for k in listed] == [("k1", False, True),
                                                                                   ("k2", True, False)]
        assert "BEGIN" not in cli.invoke(main, ["he", "keys", *config]).output
        assert cli.invoke(main, ["he", "rotate", "nope", *config]).exit_code == 2
    assert _outcomes(own_world, "he_release") == [("ok", 200), ("denied", 400), ("ok", 200)]


def test_a_policy_change_reaches_views_already_handed_out(own_world: World) -> None:
    with make_client(own_world) as client:
        header = _view(client, own_world)
        policy = own_world.directory / "policies" / "policy.csv"
        policy.write_text(policy.read_text().replace(
            "p, data-scientist, dataset:patients, read_encrypted, research, allow\n", ""))
        client.app.state.gateway.governor.swap_policy(load_policy(policy.parent))
        refused = _release(client, own_world, header)
        assert refused.status_code == 403 and refused.json()["type"].endswith("access-denied")
    assert _outcomes(own_world, "he_release") == [("denied", 403)]


def test_releases_are_rate_limited_per_principal(own_world: World) -> None:
    with make_client(own_world, he_releases_per_minute=2) as client:
        header = _view(client, own_world)
        assert _release(client, own_world, header).status_code == 200
        assert _release(client, own_world, header, {"op": "count"}).status_code == 200
        limited = _release(client, own_world, header)
        assert limited.status_code == 429 and limited.json()["retry_after"] >= 1
    assert _outcomes(own_world, "he_release") == [("ok", 200), ("ok", 200), ("denied", 429)]
