"""The pieces of a small read, in process: what one ``GET /rows?limit=20`` costs before HTTP.

    .venv/bin/python benchmarks/smallread.py --json benchmarks/results/smallread.json

A seeded demo world (2,000 patients, the fleet benchmark's) in a temporary folder; then, timed
in interleaved rounds (every case once per round, best of ``--rounds``, microseconds per call):

(a) ``Governor.read`` of alice's 20 masked rows (analytics: EU row filter and eight masks), read
    to the end: as served (the dataset kept decoded with alice's plan's masked rows, the default
    ``hot_table_bytes``); from the kept table but masked on every read (the kept masked rows
    switched off, as a read with a ``filter`` is served); and with nothing kept
    (``hot_table_bytes: 0``, every read decodes the file's row group);
(a') the same read's JSON lines (``govern.server.streaming.encode``) against ``json.dumps`` of
    each row, as before;
(b) resolving the dataset's location (``govern.storage.location.resolve``, called about five
    times per read), remembered per inode, against the same function with ``os.path.realpath``
    each time as before;
(c) an audit record's dict form (``AuditRecord.to_dict``, built three times per record) and
    sealing (hash over canonical JSON), against :func:`dataclasses.asdict` as before.

Each pair's outputs are checked equal before timing. These are the changes of the sessions that
worked on issue 17 (docs/performance.md#fleet); the whole request is measured by ``fleet.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from govern.audit import record as audit_record  # noqa: E402
from govern.audit.record import AuditRecord  # noqa: E402
from govern.config import load_settings  # noqa: E402
from govern.deliver.governor import Governor  # noqa: E402
from govern.demo import create_demo  # noqa: E402
from govern.identity.principal import Principal  # noqa: E402
from govern.server.streaming import encode  # noqa: E402
from govern.storage import location  # noqa: E402
from govern.storage.hot import HotTable  # noqa: E402


def best(fn: Callable[[], object], number: int) -> float:
    """Seconds per call, over ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="govern-smallread-") as tmp:
        info = create_demo(Path(tmp) / "demo", rows=2_000, seed=7)
        settings = load_settings(info.config, watch_policies=False, mask_threads=1)
        hot, cold = Governor(settings), Governor(settings.model_copy(update={"hot_table_bytes": 0}))
        alice = Principal("alice", attributes=dict(hot.state.policy.principals["alice"].attributes))

        def read(g: Governor) -> Callable[[], object]:
            return lambda: g.read(alice, "patients", "analytics", limit=20).reader.read_all()

        def read_masking_each_time() -> object:  # the kept table, no kept masked rows
            kept = HotTable.derived
            HotTable.derived = lambda self, key, owner, build: None  # type: ignore[method-assign]
            try:
                return read(hot)()
            finally:
                HotTable.derived = kept  # type: ignore[method-assign]

        rows = read(hot)()

        def jsonl() -> bytes:
            reader = pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches())
            return b"".join(bytes(c) for c in encode("jsonl", reader, lambda n, size: None))

        def jsonl_as_before() -> bytes:
            return "".join(json.dumps({k: v.hex() if isinstance(v, bytes) else v for k, v in row.items()},
                                      default=str, ensure_ascii=False) + "\n" for row in rows.to_pylist()).encode()

        record = AuditRecord(seq=None, time="", request_id="r" * 32, principal="alice", purpose="analytics",
                             dataset="patients", action="read", outcome="ok", status=200, plan_hash="h" * 64,
                             columns={f"c{i}": "kept" for i in range(10)}, rows=20, bytes=4_000,
                             extra={"limit": 20, "format": "jsonl", "route": "rows"}, policy_version="v1")

        def seal_asdict() -> AuditRecord:  # sealing as it was: the dict form through dataclasses.asdict
            placed = replace(record, seq=4, time="t", prev_hash="b" * 64, hash="")
            body = asdict(placed)
            body.pop("hash")
            digest = hashlib.sha256((placed.prev_hash + audit_record.canonical_json(body)).encode()).hexdigest()
            return replace(placed, hash=digest)

        def seal() -> AuditRecord:
            return record.sealed(seq=4, time="t", prev_hash="b" * 64)

        remembered = location.real_path

        def resolve_as_before() -> tuple[object, str]:  # the same resolve with realpath each time
            location.real_path = os.path.realpath  # type: ignore[assignment]
            try:
                return location.resolve("patients.parquet", settings)
            finally:
                location.real_path = remembered

        cases: dict[str, tuple[Callable[[], object], int]] = {
            "read, masked rows kept": (read(hot), 1_000),
            "read, kept table, masked each time": (read_masking_each_time, 300),
            "read, decoded each time": (read(cold), 300),
            "jsonl, one encoder": (jsonl, 1_000),
            "jsonl, json.dumps per row": (jsonl_as_before, 1_000),
            "resolve, remembered per inode": (lambda: location.resolve("patients.parquet", settings), 3_000),
            "resolve, realpath each time": (resolve_as_before, 3_000),
            "to_dict": (record.to_dict, 5_000),
            "dataclasses.asdict": (lambda: asdict(record), 5_000),
            "seal": (seal, 3_000),
            "seal through asdict": (seal_asdict, 3_000),
        }
        # the pairs agree before anything is timed
        assert read(hot)().equals(read(cold)()), "kept and decoded reads differ"
        assert read_masking_each_time().equals(read(cold)()), "kept and decoded reads differ"
        assert jsonl() == jsonl_as_before()
        assert location.resolve("patients.parquet", settings)[1] == resolve_as_before()[1]
        assert record.to_dict() == asdict(record)
        assert seal() == seal_asdict()
        for fn, _ in cases.values():  # warm: imports, plan cache, kept table, remembered paths
            for _ in range(20):
                fn()
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, (fn, number) in cases.items():
                times[name].append(best(fn, number))
    result = {name: round(min(t) * 1e6, 1) for name, t in times.items()}
    pairs = (("read, masked rows kept", "read, kept table, masked each time"),
             ("read, kept table, masked each time", "read, decoded each time"),
             ("jsonl, one encoder", "jsonl, json.dumps per row"),
             ("resolve, remembered per inode", "resolve, realpath each time"),
             ("to_dict", "dataclasses.asdict"), ("seal", "seal through asdict"))
    for now, before in pairs:
        print(f"{now:36} {result[now]:9.1f} µs   {before:36} {result[before]:9.1f} µs   "
              f"ratio {result[before] / result[now]:.2f}×")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"microseconds": result, "rounds": args.rounds}, indent=2))


if __name__ == "__main__":
    main()
