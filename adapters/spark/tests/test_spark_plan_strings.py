"""Attack: read the masking keys or raw values out of the Spark job instead of the data.

Spark prints its query plans in ``explain()``, the Spark UI's SQL tab and the event log; a key
written into an expression as a literal (the obvious way to run HMAC in Spark) sits there in
hex for anyone who can see the UI. govern_spark keeps keys out of the plan: executors read them
from a KeySource at run time. This test searches every plan string Spark produces — and the
serialized mapInArrow function that travels inside the plan — for the master key and every
subkey (raw, hex and base64) and for the demo world's raw sensitive values. A control test
shows the same search finds a key that *is* a literal, so the search can fail."""

from __future__ import annotations

import base64
import re

import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

import govern_spark
from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.errors import GovernError
from govern.mask.keys import KeyRing
from govern.policy.model import local_principal

pytestmark = pytest.mark.xdist_group("spark")  # one worker, one JVM, for all Spark tests

SUBKEY_PURPOSES = ["hash", "tokenize-enc", "noise", "date_shift", "rr"]


def key_material(key_file: str, keys: KeyRing, domains: list[str]) -> list[bytes]:
    """The master keys of the file and every subkey a demo plan's masks derive."""
    secrets: list[bytes] = []
    for line in open(key_file).read().splitlines():
        m = re.match(r"^\s*[\w.-]+\s*:\s*base64:(\S+)", line)
        if m:
            secrets.append(base64.b64decode(m.group(1)))
    return secrets + [keys.subkey(p) for p in SUBKEY_PURPOSES] + [keys.subkey("tokenize-mac/" + d) for d in domains]


def key_needles(key_file: str, keys: KeyRing, domains: list[str]) -> set[str]:
    """Every form in which key material could appear in a plan string."""
    needles = set()
    for s in key_material(key_file, keys, domains):
        needles |= {s.hex(), s.hex().upper(), base64.b64encode(s).decode(), s[:12].hex(), s[:12].hex().upper()}
        for pad in (0x36, 0x5C):  # the HMAC inner/outer padded keys a hand-written HMAC would bind
            padded = bytes(b ^ pad for b in s.ljust(64, b"\0"))
            needles |= {padded.hex(), padded.hex().upper(), padded[:12].hex().upper()}
    return needles


def raw_needles(demo) -> set[str]:
    raw = pq.read_table(demo.files["patients"]).to_pydict()
    return {v for c in ("name", "email", "ssn", "phone") for v in raw[c] if v}


def plan_strings(df: DataFrame, capsys: pytest.CaptureFixture[str]) -> str:
    df.explain("extended")
    explained = capsys.readouterr().out
    qe = df._jdf.queryExecution()
    return "\n".join([explained, qe.toString(), qe.executedPlan().toString(), qe.optimizedPlan().toString()])


@pytest.fixture(scope="module")
def governor(demo) -> Governor:
    return Governor(load_settings(demo.config))


def test_no_key_or_raw_value_in_any_plan_string(spark, demo, governor, capsys) -> None:
    settings = governor.settings
    source = govern_spark.KeySource(file=str(settings.masking_key_file), key_id=settings.masking_key_id)
    ring = source.load()
    policy = governor.state.policy
    raw = raw_needles(demo)
    checked, shipped = 0, 0
    for who in sorted(policy.principals):
        for purpose in sorted(policy.purposes):
            for dataset in sorted(policy.datasets):
                try:
                    plan = governor.plan(local_principal(policy, who), dataset, purpose)
                except GovernError:
                    continue
                material = key_material(str(settings.masking_key_file), ring, list(plan.token_domains()))
                secrets = key_needles(str(settings.masking_key_file), ring, list(plan.token_domains()))
                out = govern_spark.apply_plan(spark.read.parquet(str(demo.files[dataset])), plan, source)
                out.collect()  # executed: the executed plan and its metrics are filled in
                text = plan_strings(out, capsys)
                assert "MapInArrow" in text or "mapInArrow" in text or not plan.token_domains()
                assert not [n for n in secrets if n in text], f"key material in the plan of {who}/{purpose}/{dataset}"
                assert not [v for v in raw if v in text], f"raw values in the plan of {who}/{purpose}/{dataset}"
                # the function shipped inside the plan to the executors
                for cmd in _stage_functions(out):
                    shipped += b"ArrowStage" in cmd  # the stage itself, not some other UDF
                    assert not [n for n in secrets if n.encode() in cmd]
                    assert not [m for m in material if m[:12] in cmd]
                checked += 1
    assert checked >= 6 and shipped >= 1


def _stage_functions(df: DataFrame) -> list[bytes]:
    """The pickled mapInArrow functions of ``df``'s plan, as Spark ships them to executors."""
    found = []
    plan = df._jdf.queryExecution().analyzed()
    nodes = [plan]
    while nodes:
        node = nodes.pop()
        if node.nodeName() == "MapInArrow":
            signed = node.functionExpr().func().command().mkString(",")  # a Scala Seq[Byte]
            found.append(bytes(int(b) & 0xFF for b in signed.split(",")))
        nodes.extend(node.children().toList().apply(i) for i in range(node.children().size()))
    return found


def test_the_search_finds_a_key_written_as_a_literal(spark, demo, governor, capsys) -> None:
    """Control: HMAC written by hand in Spark expressions puts the key into the plan — and the
    search above sees it."""
    settings = governor.settings
    ring = govern_spark.KeySource(file=str(settings.masking_key_file), key_id=settings.masking_key_id).load()
    key = ring.subkey("hash").ljust(64, b"\0")
    ipad, opad = bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)
    df = spark.read.parquet(str(demo.files["patients"]))
    inner = F.sha2(F.concat(F.lit(ipad), F.col("name").cast("binary")), 256)
    naive = df.select(F.sha2(F.concat(F.lit(opad), F.unhex(inner)), 256).alias("name"))
    text = plan_strings(naive, capsys)
    assert [n for n in key_needles(str(settings.masking_key_file), ring, []) if n in text]
