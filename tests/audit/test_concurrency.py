"""Appends from many threads and from several OS processes form one gap-free, valid chain.

Threads share one log object (and its group-committing writer); processes each open their own
log on the same store, which is how several gateway processes share one PostgreSQL database
(or one SQLite file). Each process also submits refusals (never waiting) and signs checkpoints
into one shared checkpoint file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from govern.audit import Anchor, AuditLog
from tests.audit.conftest import Store, make_record

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from govern.audit import open_audit_log
    from tests.audit.conftest import make_record

    import threading
    from govern.audit import Anchor
    from tests.audit.conftest import KEYS

    url, prefix, name, count, go = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
    anchor = Anchor.from_keys(Path(sys.argv[6]), KEYS)
    log = open_audit_log(url, table_prefix=prefix, anchor=anchor)
    log.pending()  # connect and create tables before the start signal
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.005)

    def work(t):
        for i in range(t, count, 4):
            rid = f"{name}-{i:03d}"
            log.reserve(rid)
            log.append(make_record(i, request_id=rid, principal=name))
            log.submit(make_record(i, request_id=f"{rid}-refused", principal=None, outcome="denied",
                                   status=401))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()  # flushes the submitted records
""")


def assert_one_clean_chain(log: AuditLog, total: int, principals: dict[str, int]) -> None:
    records = [r for page in _pages(log) for r in page]
    assert [r.seq for r in records] == list(range(1, total + 1))
    for name, count in principals.items():
        assert sum(r.principal == name for r in records) == count
    assert len({r.request_id for r in records}) == total
    result = log.verify()
    assert (result.ok, result.count, result.uncovered) == (True, total, 0), result.message
    assert log.pending() == []


def _pages(log: AuditLog):
    after = 0
    while page := log.records(after_seq=after, limit=1000):
        yield page
        after = page[-1].seq


def run_threads(log: AuditLog, threads: int, each: int) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(each):
                rid = f"t{t}-{i:03d}"
                log.reserve(rid)
                log.append(make_record(i, request_id=rid, principal=f"t{t}"))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []


def run_processes(store: Store, tmp_path: Path, processes: int, each: int, anchor: Anchor) -> None:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, store.url, store.prefix, f"p{k}",
                               str(each), str(go), str(anchor.path)], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k in range(processes)]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        go.touch()
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_threads_on_one_log(store: Store, anchored_log: AuditLog) -> None:
    threads, each = (16, 25) if store.backend == "sqlite" else (16, 10)
    run_threads(anchored_log, threads, each)
    assert_one_clean_chain(anchored_log, threads * each, {f"t{t}": each for t in range(threads)})


def test_processes_sharing_one_store(store: Store, anchored_log: AuditLog, anchor: Anchor,
                                     tmp_path: Path) -> None:
    processes, each = 2, 40
    started = time.monotonic()
    run_processes(store, tmp_path, processes, each, anchor)
    print(f"{store.backend}: {processes} processes x {each} appends + {each} submits in "
          f"{time.monotonic() - started:.2f}s")
    assert_one_clean_chain(anchored_log, 2 * processes * each,
                           {f"p{k}": each for k in range(processes)})
