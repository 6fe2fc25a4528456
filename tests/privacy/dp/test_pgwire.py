"""DP SQL over the PostgreSQL wire with real clients (psycopg, psql), and the Python client, against `govern serve`."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess

import psycopg
import pytest

from tests.gateway import Server, World


def connect(server: Server, who: str = "alice", purpose: str = "analytics") -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=server.pg_port, user=who, password=server.world.keys[who],
                           dbname=purpose, autocommit=True)


def audit_actions(world: World) -> list[tuple[str, str]]:
    conn = sqlite3.connect(world.directory / "state" / "audit.db")
    try:
        return conn.execute("SELECT action, outcome FROM audit_log WHERE action = 'query_dp' ORDER BY seq").fetchall()
    finally:
        conn.close()


def test_session_settings_and_hints(server: Server) -> None:
    with connect(server) as conn:
        conn.execute("SET govern.privacy = dp")
        conn.execute("SET govern.epsilon = 0.5")
        cur = conn.execute("SELECT region, COUNT(*) AS n, AVG(charges) FROM patients GROUP BY region")
        assert [d.name for d in cur.description] == ["region", "n", "avg"]
        rows = cur.fetchall()
        assert [r[0] for r in rows] == ["APAC", "EU", "US"] and isinstance(rows[1][1], int)
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="not in the DP SQL subset: no JOIN"):
            conn.execute("SELECT COUNT(*) FROM patients p JOIN encounters e USING (patient_id)")
        conn.execute("RESET govern.privacy")
        # without the session setting, a hint makes one statement differentially private
        [(n,)] = conn.execute("/*+ dp epsilon=0.25 */ SELECT COUNT(*) FROM patients").fetchall()
        assert 600 < n < 760  # alice's EU rows (679) + noise of scale 4: 80 is 20 scales
        # prepared (extended protocol) statements are described without being charged
        cur = conn.cursor()
        cur.execute("/*+ dp epsilon=0.25 */ SELECT region, SUM(charges) FROM patients GROUP BY 1", prepare=True)
        assert [d.name for d in cur.description] == ["region", "sum"] and len(cur.fetchall()) == 3
    assert audit_actions(server.world) == [("query_dp", "ok"), ("query_dp", "denied"), ("query_dp", "ok"),
                                           ("query_dp", "ok")]
    with connect(server) as conn:
        conn.execute("SET govern.privacy = dp")
        with pytest.raises(psycopg.Error, match="needs an epsilon"):
            conn.execute("SELECT COUNT(*) FROM patients")


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_psql(server: Server) -> None:
    url = f"postgresql://alice:{server.world.keys['alice']}@127.0.0.1:{server.pg_port}/analytics"
    out = subprocess.run(["psql", url, "-X", "-A", "-t", "-c",
                          "/*+ dp epsilon=0.5 */ select region, count(*) from patients group by 1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [line.split("|")[0] for line in out.stdout.split()] == ["APAC", "EU", "US"]


def test_python_client(server: Server) -> None:
    from govern.client import Client
    from govern.errors import BudgetExceeded

    with Client(server.url, token=server.world.keys["alice"], purpose="analytics") as c:
        out = c.dp("patients", [{"function": "count"}], group_by=["region"], epsilon=4.0)
        assert [r["region"] for r in out["rows"]] == ["APAC", "EU", "US"]
        sql = c.dp_sql("select count(*) from patients", epsilon=0.5)
        assert sql["columns"] == [{"name": "count", "type": "int64"}]
        with pytest.raises(BudgetExceeded) as refused:
            c.dp("patients", [{"function": "count"}], epsilon=1.0)
        assert refused.value.extra["budget"]["left"]["epsilon"] == pytest.approx(0.5)
        [patients] = c.budget("patients")
        assert patients["spent"]["epsilon"] == pytest.approx(4.5) and patients["releases"] == 2
