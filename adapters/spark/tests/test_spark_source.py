"""Tier 1: ``spark.read.format("govern")`` through a real ``govern serve`` on loopback.

For every demo principal and purpose, the data source returns exactly what the gateway's
/rows returns (schema and values); filters on unmasked columns are pushed (and signed into the
fragment tickets), the rest stay in Spark; the job is audited as one scan plus one record per
fragment; executors hold only tickets — no API key, masking key or raw value appears in
``explain()``, the plan strings the Spark UI shows, the Spark conf, or the pickled reader; a
ticket gone stale (the data changed) fails the task with the gateway's refusal."""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql.datasource import EqualTo, StringStartsWith
from sparkcheck import plain
from test_spark_plan_strings import key_needles, plan_strings, raw_needles

import govern_spark
from govern.config import load_settings
from govern.mask.keys import KeyRing
from govern_spark.source import GatewayError, GovernDataSource
from tests.gateway import Server, World, new_data_version, start_server, stop_server

pytestmark = pytest.mark.xdist_group("spark")  # one worker, one JVM, for all Spark tests

WHO = {"alice": "analytics", "bob": "model-training", "carol": "governance", "dave": "treatment"}


@pytest.fixture(scope="module")
def gateway(demo, tmp_path_factory) -> Iterator[tuple[Server, dict[str, Path]]]:
    """A real gateway over a copy of the demo world whose files hold 200-row row groups (and
    300-row fragments), and a key file per principal."""
    d = tmp_path_factory.mktemp("tier1") / "world"
    shutil.copytree(demo.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    for name in ("patients", "encounters"):
        path = d / "data" / f"{name}.parquet"
        pq.write_table(pq.read_table(path), path, row_group_size=200)
    with (d / "govern.yaml").open("a") as fh:
        # fragments of the files themselves (several per dataset); the default path, fragments of
        # the masked materialization sent as stored Parquet, is tested below (stored_gateway)
        fh.write("fragment_rows: 300\nmaterialize_max_bytes: 0\n")
    yield from _served(World(d, dict(demo.api_keys)))


def _served(world: World) -> Iterator[tuple[Server, dict[str, Path]]]:
    """``govern serve`` over ``world``, and a key file per principal (the source reads keys
    from files, never from options)."""
    key_files = {}
    for who, key in world.keys.items():
        key_files[who] = world.directory / f"{who}.key"
        key_files[who].write_text(key + "\n")
    server = start_server(world, "--pg-port", "0", "--flight-port", "0")
    try:
        yield server, key_files
    finally:
        stop_server(server)


def govern_read(spark, server: Server, key_file: Path, dataset: str, purpose: str, **options: str):
    reader = (spark.read.format("govern").option("url", server.url).option("api_key_file", str(key_file))
              .option("dataset", dataset).option("purpose", purpose))
    for k, v in options.items():
        reader = reader.option(k, v)
    return reader.load()


def rows(server: Server, who: str, dataset: str, purpose: str, **params: str) -> pa.Table:
    r = httpx.get(f"{server.url}/v1/datasets/{dataset}/rows", params=params, timeout=60,
                  headers={"Authorization": f"Bearer {server.world.keys[who]}", "X-Purpose": purpose})
    assert r.status_code == 200, r.text
    return pa.ipc.open_stream(r.content).read_all()


def spark_arrow(df, like: pa.Schema) -> pa.Table:
    return plain(govern_spark.cast_to_plan(df.toArrow(), {f.name: f.type for f in like}))


def audit(server: Server, who: str) -> list[dict]:
    r = httpx.get(f"{server.url}/v1/audit", params={"principal": who, "limit": 1000}, timeout=30,
                  headers={"Authorization": f"Bearer {server.world.keys['carol']}", "X-Purpose": "governance"})
    assert r.status_code == 200, r.text
    return r.json()["records"]


@pytest.fixture(scope="module")
def registered(spark):
    govern_spark.register(spark)
    return spark


@pytest.mark.parametrize("dataset", ["patients", "encounters"])
def test_every_demo_principal_gets_exactly_what_rows_returns(registered, gateway, dataset) -> None:
    server, key_files = gateway
    for who, purpose in WHO.items():
        expected = plain(rows(server, who, dataset, purpose))
        df = govern_read(registered, server, key_files[who], dataset, purpose)
        got = spark_arrow(df, expected.schema)
        assert got.schema.equals(expected.schema), (who, got.schema, expected.schema)
        assert got.equals(expected), who
        assert df.rdd.getNumPartitions() > 1  # one task per fragment


def test_a_principal_without_a_grant_gets_the_gateways_refusal(registered, gateway) -> None:
    server, key_files = gateway
    with pytest.raises(Exception, match=r"403.*purpose-not-entitled") as info:
        govern_read(registered, server, key_files["eve"], "patients", "analytics").collect()
    assert server.world.keys["eve"] not in str(info.value)


def test_column_pruning_and_filters_on_unmasked_columns_are_pushed(registered, gateway) -> None:
    server, key_files = gateway
    df = govern_read(registered, server, key_files["carol"], "patients", "governance", columns="patient_id,region,email")
    eu = df.filter("region = 'EU'")
    got = spark_arrow(eu, rows(server, "carol", "patients", "governance").select(df.columns).schema)
    expected = plain(rows(server, "carol", "patients", "governance", columns="patient_id,region,email",
                          filter="region = 'EU'"))
    assert got.equals(expected) and 0 < got.num_rows
    [scan] = [r for r in audit(server, "carol") if r["extra"]["route"] == "scan"][-1:]
    assert scan["extra"]["columns"] == ["patient_id", "region", "email"]
    assert "\"region\" = 'EU'" in scan["extra"]["filters"]  # (and Spark's IS NOT NULL)
    fragments = [r for r in audit(server, "carol") if r["extra"]["route"] == "fragment" and r["extra"]["scan"] == scan["request_id"]]
    assert len(fragments) == scan["extra"]["fragments"] > 1 and all(r["outcome"] == "ok" for r in fragments)
    assert sum(r["rows"] for r in fragments) == expected.num_rows


def test_filters_on_masked_columns_stay_in_spark(registered, gateway) -> None:
    """bob sees ssn as its last four digits and email as its domain: a filter on them runs in
    Spark, on what bob sees — it is never sent to the gateway to test raw values."""
    server, key_files = gateway
    df = govern_read(registered, server, key_files["bob"], "patients", "model-training")
    seen = rows(server, "bob", "patients", "model-training")
    some_ssn = next(v for v in seen.column("ssn").to_pylist() if v)
    got = df.filter(f"ssn = '{some_ssn}' OR email LIKE 'a%'").toArrow()
    on_masked = [r for r in seen.to_pylist() if r["ssn"] == some_ssn or (r["email"] or "").startswith("a")]
    assert got.num_rows == len(on_masked) >= 1
    raw = pq.read_table(server.world.directory / "data" / "patients.parquet").column("ssn").to_pylist()
    assert df.filter(f"ssn = '{raw[0]}'").count() == 0  # a raw SSN matches nothing bob sees
    scans = [r for r in audit(server, "bob") if r["extra"]["route"] == "scan"]
    assert all("filters" not in r["extra"] for r in scans)


def test_pushed_filter_translation_is_only_what_the_gateway_computes_exactly() -> None:
    from pyspark.sql.datasource import GreaterThan, In, IsNull, Not

    from govern_spark.source import to_sql

    ok = {"region", "n", "d"}
    assert to_sql(EqualTo(("region",), "O'Hare"), ok) == "\"region\" = 'O''Hare'"
    assert to_sql(Not(In(("n",), (1, 2))), ok) == "NOT (\"n\" IN (1, 2))"
    assert to_sql(IsNull(("d",)), ok) == "\"d\" IS NULL"
    assert to_sql(StringStartsWith(("region",), "E"), ok) == "\"region\" LIKE 'E%'"
    for refused in (EqualTo(("ssn",), "1"), GreaterThan(("n",), 1.5), StringStartsWith(("region",), "a%"),
                    EqualTo(("a", "b"), 1), In(("n",), (1, None))):
        assert to_sql(refused, ok) is None, refused


def test_no_api_key_masking_key_or_raw_value_in_plans_conf_or_pickles(registered, gateway, demo, capsys) -> None:
    server, key_files = gateway
    world = server.world
    settings = load_settings(world.config)
    ring = KeyRing.from_settings(settings)
    secrets = set(world.keys.values()) | key_needles(str(settings.masking_key_file), ring, ["patient"])
    raw = raw_needles(demo)
    for who, purpose in WHO.items():
        df = govern_read(registered, server, key_files[who], "patients", purpose).filter("region = 'EU'")
        df.collect()
        text = plan_strings(df, capsys)
        assert "govern" in text.lower()
        assert not [s for s in secrets if s in text], who
        assert not [v for v in raw if v in text], who
    conf = "\n".join(f"{k}={v}" for k, v in registered.sparkContext.getConf().getAll())
    conf += "\n".join(f"{k}={v}" for k, v in registered.conf.getAll.items())
    assert not [s for s in secrets if s in conf]
    # what Spark pickles and ships: the source, its reader (after pushdown) and every partition
    source = GovernDataSource({"url": server.url, "api_key_file": str(key_files["bob"]), "dataset": "patients",
                               "purpose": "model-training"})
    reader = source.reader(source.schema())
    list(reader.pushFilters([EqualTo(("region",), "EU")]))
    partitions = reader.partitions()
    shipped = pickle.dumps(source) + pickle.dumps(reader)
    assert world.keys["bob"].encode() not in shipped
    assert all(world.keys["bob"] not in repr(p) and p.ticket not in repr(p) for p in partitions)
    assert not [p for p in partitions if world.keys["bob"].encode() in pickle.dumps(p)]


def test_a_stale_ticket_fails_the_task_with_the_gateways_refusal(registered, gateway) -> None:
    server, key_files = gateway
    source = GovernDataSource({"url": server.url, "api_key_file": str(key_files["alice"]),
                               "dataset": "encounters", "purpose": "analytics"})
    reader = source.reader(source.schema())
    [first, *_] = reader.partitions()
    assert sum(b.num_rows for b in reader.read(first)) > 0
    with (new_data_version(server.world.directory / "data" / "encounters.parquet", row_group_size=200),
          pytest.raises(GatewayError, match=r"403.*ticket-stale.*data changed")):
        list(reader.read(first))
    refused = [r for r in audit(server, "alice") if r["extra"]["route"] == "fragment" and r["outcome"] == "denied"]
    assert refused and refused[-1]["status"] == 403


def test_an_api_key_option_is_refused() -> None:
    with pytest.raises(ValueError, match="api_key_file"):
        GovernDataSource({"dataset": "patients", "purpose": "analytics", "api_key": "gk_x"})


# -- fragments of the masked materialization, sent as stored Parquet -------------------------------

@pytest.fixture(scope="module")
def stored_gateway(demo, tmp_path_factory) -> Iterator[tuple[Server, dict[str, Path]]]:
    """The demo world with the defaults: fragments are row groups of each plan's masked
    materialization, which the source asks for as stored Parquet."""
    d = tmp_path_factory.mktemp("tier1-stored") / "world"
    shutil.copytree(demo.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    yield from _served(World(d, dict(demo.api_keys)))


def test_materialized_fragments_arrive_as_stored_parquet_and_give_exactly_rows(registered, stored_gateway) -> None:
    server, key_files = stored_gateway
    for who, purpose in WHO.items():
        expected = plain(rows(server, who, "patients", purpose))
        got = spark_arrow(govern_read(registered, server, key_files[who], "patients", purpose), expected.schema)
        assert got.schema.equals(expected.schema) and got.equals(expected), who
        sent = [r for r in audit(server, who) if r["extra"].get("route") == "fragment"]
        assert sent and all(r["extra"].get("format") == "parquet-fragment" for r in sent), who


def test_a_stored_fragment_cut_short_or_misplaced_is_never_decoded(stored_gateway) -> None:
    from govern_spark.source import PARQUET_FRAGMENT, stored_fragment

    server, _ = stored_gateway
    m = httpx.post(f"{server.url}/v1/datasets/patients/scan", json={}, timeout=60,
                   headers={"Authorization": f"Bearer {server.world.keys['bob']}", "X-Purpose": "model-training"}).json()
    f = m["fragments"][0]
    r = httpx.get(server.url + f["url"], timeout=60,
                  headers={"Authorization": f"Bearer {f['ticket']}", "Accept": PARQUET_FRAGMENT})
    assert r.headers["content-type"] == PARQUET_FRAGMENT
    whole = pa.Table.from_batches(list(stored_fragment(r.content, r.headers)))
    assert whole.num_rows == f["rows"] > 0
    with pytest.raises((GatewayError, OSError, pa.ArrowException)):
        list(stored_fragment(r.content[:-10], r.headers))  # the footer cut
    with pytest.raises((GatewayError, OSError, pa.ArrowException)):
        list(stored_fragment(r.content[: len(r.content) // 2], r.headers))  # the row groups cut
    begin, end = (int(v) for v in r.headers["x-govern-byte-span"].split("-"))
    shifted = {**r.headers, "x-govern-byte-span": f"{begin + 1}-{end + 1}"}
    with pytest.raises((GatewayError, OSError, pa.ArrowException)):
        list(stored_fragment(r.content, shifted))
