"""End-to-end gateway throughput and memory: a masked streaming read over HTTP from a real
``govern serve`` process, against a plain pyarrow read of the same Parquet files.

    .venv/bin/python benchmarks/gateway.py --sizes 1,4 --json benchmarks/results/gateway.json

For each size S (GiB of Parquet on disk) the script builds a dataset of at least S GiB: the demo
``patients`` table (``--part-rows`` rows, seeded) is generated once and copied N times as part
files into one folder, and a copy of the demo catalog points ``patients.location`` at that
folder. Sizes are processed in increasing order and the folder only grows, so the disk holds
the largest size once; everything is deleted at the end (``--keep`` keeps it). Then, per size:

1. **direct** — ``pyarrow.dataset.dataset(folder).to_batches()``, every batch consumed, all
   columns (the ceiling). ``--direct-repeat`` runs, the best one counts. Also reported: the same
   scan restricted to the raw columns bob's plan reads.
2. **gateway** — a fresh ``govern serve --no-watch`` process on loopback; bob (``model-training``:
   tokenize, hash, email_domain, show_last, generalize, noise, a cell rule; no row filter) reads
   the whole dataset with ``govern.client.Client.stream`` and every batch is consumed. The row
   count must equal the direct read's. Ratio = gateway rows/s ÷ direct rows/s (target ≥ 0.5).
3. **server memory** — a thread samples ``/proc/PID/status`` (VmRSS, VmHWM) of the server every
   100 ms during the read. Target: peak RSS under 500 MiB at every size and flat across sizes
   (largest size's peak within 10% of the smallest size's).

The CPU seconds used by the server and by the client during the read are reported too: on a
small machine they share the same cores, which bounds what the pair can reach.

At the smallest size (unless ``--no-breakdown``) the read is also taken apart, to show where
time goes: the same HTTP request with the body drained as raw bytes (server cost, nearly free
client); raw httpx with ``pyarrow.ipc.open_stream`` (client without ``Client``'s buffering);
govern's ``Governor.read`` in this process (scan + masks, no HTTP), with the peak of Arrow's
allocations; and (unless ``--no-what-if``) the same in-process read with the Parquet scanner's
``use_threads=True`` — what ``govern.storage.scan`` did before (apache/arrow#39808), not govern's
code today.

Safety: if the server's RSS passes ``--rss-abort-mib`` (default 60% of MemAvailable) the read is
stopped, reported as aborted, and the targets are MISS.

Notes. The server's ``max_rows`` (default 10,000,000: a larger read without ``limit`` is refused)
is raised in the benchmark's settings so the whole dataset can be read; the files are read from
the page cache (they were just written and fit in memory), for both the direct and the gateway
read. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GIB = 1 << 30
MIB = 1 << 20
PRINCIPAL, PURPOSE, DATASET = "bob", "model-training", "patients"
RATIO_GOAL = 0.5
RSS_LIMIT_MIB = 500.0
RSS_FLAT_GROWTH = 0.10  # largest size's peak may exceed the smallest size's by at most 10%
MAX_ROWS = 10**15  # the benchmark's server setting: no cap on a whole-dataset read


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the world ------------------------------------------------------------------------------------

def build_world(root: Path, part_rows: int, seed: int) -> dict[str, Any]:
    """Demo world of ``part_rows`` patients (in a child process, so this process stays small)."""
    code = (
        "import sys, json; from pathlib import Path; from govern.demo import create_demo;"
        "info = create_demo(Path(sys.argv[1]), rows=int(sys.argv[2]), seed=int(sys.argv[3]));"
        "print(json.dumps({k: str(v) for k, v in info.files.items()}))"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(root), str(part_rows), str(seed)],
                         check=True, capture_output=True, text=True, cwd=REPO)
    files = json.loads(out.stdout.strip().splitlines()[-1])
    seconds = time.perf_counter() - t0

    # The catalog's patients now live in a folder of part files (relative to data_root).
    catalog_path = root / "policies" / "catalog.yaml"
    catalog = yaml.safe_load(catalog_path.read_text())
    catalog["datasets"][DATASET]["location"] = "patients_parts"
    catalog_path.write_text("# benchmarks/gateway.py: patients is a folder of part files\n"
                            + yaml.safe_dump(catalog, sort_keys=False, allow_unicode=True))
    settings_path = root / "govern.yaml"
    settings = yaml.safe_load(settings_path.read_text())
    settings["max_rows"] = MAX_ROWS
    settings["log_level"] = "warning"
    settings_path.write_text(yaml.safe_dump(settings, sort_keys=False))
    (root / "data" / "patients_parts").mkdir()
    return {"seconds": seconds, "part_file": files[DATASET],
            "keys": json.loads((root / "keys.json").read_text())}


def grow_parts(folder: Path, part_file: Path, count: int) -> list[Path]:
    """Copy ``part_file`` into ``folder`` until it holds ``count`` parts (real copies, no links)."""
    have = sorted(folder.glob("part-*.parquet"))
    for i in range(len(have), count):
        shutil.copyfile(part_file, folder / f"part-{i:05d}.parquet")
    return sorted(folder.glob("part-*.parquet"))


# -- the server -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, config: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "ab")
        exe = Path(sys.executable).with_name("govern")
        cmd = [str(exe), "serve", "--config", str(config), "--port", str(self.port), "--no-watch"]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"govern serve exited with {self.proc.returncode}; see its log")
            try:
                r = httpx.get(self.url + "/readyz", timeout=5)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("govern serve did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024.0
    return out


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024.0
    return 8192.0


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class OtherCpu:
    """CPUs' worth of work done by processes other than this one and ``pid`` (the server) while
    a phase ran: 0 on a quiet machine. Machine-wide busy time comes from /proc/stat."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self.start = self._clock()

    def _clock(self) -> tuple[float, float, float]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = sum(fields[i] for i in (0, 1, 2, 5, 6, 7)) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
        own = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                     resource.getrusage(resource.RUSAGE_CHILDREN)))
        if self.pid is not None:
            try:
                own += proc_cpu_seconds(self.pid)
            except OSError:
                pass
        return time.perf_counter(), busy, own

    def cpus(self) -> float:
        wall, busy, own = (b - a for a, b in zip(self.start, self._clock(), strict=True))
        return max(0.0, (busy - own) / wall) if wall > 0 else 0.0


NOISY = 0.1  # other processes' CPUs above which a phase is flagged as measured on a busy machine
noise_log: list[tuple[str, float]] = []


def note_noise(label: str, meter: OtherCpu) -> float:
    cpus = meter.cpus()
    noise_log.append((label, cpus))
    if cpus > NOISY:
        log(f"  note: other processes used {cpus:.2f} CPUs during '{label}' (not a quiet machine)")
    return cpus


class RssSampler(threading.Thread):
    """Samples a process's VmRSS/VmHWM every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, VmRSS MiB)
        self.hwm = 0.0
        self.last = 0.0
        self._halt = threading.Event()
        self._t0 = time.perf_counter()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                st = proc_status(self.pid)
            except OSError:
                break
            self.last = st["VmRSS"]
            self.hwm = max(self.hwm, st["VmHWM"])
            self.samples.append((time.perf_counter() - self._t0, st["VmRSS"]))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    @property
    def peak(self) -> float:
        return max((r for _, r in self.samples), default=0.0)

    def series(self, every: float = 1.0) -> list[list[float]]:
        """Downsampled (t, max RSS in the window) pairs for the JSON."""
        out: list[list[float]] = []
        for t, r in self.samples:
            if out and t - out[-1][0] < every:
                out[-1][1] = max(out[-1][1], round(r, 1))
            else:
                out.append([round(t, 1), round(r, 1)])
        return out


# -- reads ----------------------------------------------------------------------------------------

class Progress:
    def __init__(self, label: str, total_rows: int, every: float = 5.0,
                 sampler: RssSampler | None = None) -> None:
        self.label, self.total, self.every, self.sampler = label, total_rows, every, sampler
        self.t0 = self.next = time.perf_counter()
        self.next += every

    def tick(self, rows: int) -> None:
        now = time.perf_counter()
        if now >= self.next:
            self.next = now + self.every
            dt = now - self.t0
            rss = f", server RSS {self.sampler.last:.0f} MiB (peak {self.sampler.peak:.0f})" if self.sampler else ""
            log(f"  {self.label}: {rows:,}/{self.total:,} rows ({100 * rows / self.total:.0f}%), "
                f"{rows / dt / 1e6:.2f} M rows/s{rss}")


def direct_read(folder: Path, total_rows: int, columns: list[str] | None = None) -> dict[str, Any]:
    dataset = pads.dataset(folder, format="parquet")
    progress = Progress("direct" if columns is None else "direct (bob's columns)", total_rows)
    t0 = time.perf_counter()
    c0 = time.process_time()
    rows = 0
    for batch in dataset.to_batches(columns=columns):
        rows += batch.num_rows
        progress.tick(rows)
    return {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "rows": rows}


def client_read(url: str, token: str, total_rows: int, sampler: RssSampler, abort_mib: float) -> dict[str, Any]:
    """bob's whole-dataset read through govern.client; stops early (aborted=True) if the server's
    RSS passes ``abort_mib``, so a server whose memory grows with the data cannot take the
    machine down."""
    from govern.client import Client

    progress = Progress("gateway", total_rows, sampler=sampler)
    rows = nbytes = batches = 0
    aborted = False
    t0 = time.perf_counter()
    c0 = time.process_time()
    with Client(url, token=token, purpose=PURPOSE, timeout=300) as client:
        stream = client.stream(DATASET)
        for batch in stream:
            rows += batch.num_rows
            nbytes += batch.nbytes
            batches += 1
            progress.tick(rows)
            if sampler.last > abort_mib:
                aborted = True
                log(f"  ABORT: server RSS {sampler.last:.0f} MiB passed the safety limit {abort_mib:.0f} MiB "
                    f"after {rows:,} rows; closing the stream")
                stream.close()
                break
    return {"seconds": time.perf_counter() - t0, "client_cpu_s": time.process_time() - c0, "rows": rows,
            "arrow_bytes": nbytes, "batches": batches, "aborted": aborted}


def raw_http_read(url: str, token: str, decode: bool) -> dict[str, Any]:
    """The same request with plain httpx: drain bytes (decode=False) or decode the Arrow stream."""
    import httpx

    headers = {"Authorization": f"Bearer {token}", "X-Purpose": PURPOSE}
    t0 = time.perf_counter()
    c0 = time.process_time()
    rows = body = 0
    with httpx.stream("GET", f"{url}/v1/datasets/{DATASET}/rows", headers=headers, timeout=300) as r:
        r.raise_for_status()
        chunks = r.iter_raw(1 << 20)
        if not decode:
            for chunk in chunks:
                body += len(chunk)
        else:
            class Source:  # minimal read-only file over the chunks (one copy per byte)
                closed = False

                def __init__(self) -> None:
                    self.buf = bytearray()
                    self.n = 0

                def readable(self) -> bool:
                    return True

                def read(self, n: int = -1) -> bytes:
                    while n < 0 or len(self.buf) < n:
                        try:
                            self.buf += next(chunks)
                        except StopIteration:
                            break
                    n = len(self.buf) if n < 0 else min(n, len(self.buf))
                    out = bytes(memoryview(self.buf)[:n])
                    del self.buf[:n]
                    self.n += n
                    return out

            src = Source()
            for batch in pa.ipc.open_stream(src):
                rows += batch.num_rows
            body = src.n
    return {"seconds": time.perf_counter() - t0, "client_cpu_s": time.process_time() - c0,
            "rows": rows or None, "body_bytes": body}


class _ScannerOverride:
    """A dataset whose ``scanner()`` is called with ``use_threads`` forced (what-if only)."""

    def __init__(self, dataset: Any, use_threads: bool) -> None:
        self._dataset, self._use_threads = dataset, use_threads

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dataset, name)

    def scanner(self, **kwargs: Any) -> Any:
        kwargs["use_threads"] = self._use_threads
        return self._dataset.scanner(**kwargs)


def in_process_read(config: Path, total_rows: int, scan_use_threads: bool | None = None) -> dict[str, Any]:
    """govern's Governor.read in this process: scan + masks, no HTTP, no encoding.

    ``scan_use_threads`` (what-if, not govern's code path): override the ``use_threads`` that
    ``govern.storage.scan.scan`` passes to ``Dataset.scanner``."""
    from govern.config import load_settings
    from govern.deliver.governor import Governor
    from govern.policy.model import local_principal

    gov = Governor(load_settings(config))
    if scan_use_threads is not None:
        opened = gov.dataset
        gov.dataset = lambda name, state=None, **kw: _ScannerOverride(opened(name, state, **kw), scan_use_threads)  # type: ignore[method-assign]
    principal = local_principal(gov.state.policy, PRINCIPAL)
    label = "in-process Governor.read" + ("" if scan_use_threads is None else f" (scan use_threads={scan_use_threads})")
    progress = Progress(label, total_rows)
    sampler = RssSampler(os.getpid(), 0.1)
    pool = pa.default_memory_pool()
    rss0 = proc_status(os.getpid())["VmRSS"]
    alloc0 = pa.total_allocated_bytes()
    sampler.start()
    t0 = time.perf_counter()
    c0 = time.process_time()
    rows = 0
    alloc_peak = 0
    try:
        for batch in gov.read(principal, DATASET, PURPOSE, limit=None).reader:
            rows += batch.num_rows
            alloc_peak = max(alloc_peak, pa.total_allocated_bytes())
            progress.tick(rows)
    finally:
        sampler.stop()
    return {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "rows": rows,
            "mask_threads": gov.settings.mask_threads, "batch_size": gov.settings.batch_size,
            "arrow_allocated_peak_mib": (alloc_peak - alloc0) / MIB, "arrow_pool": pool.backend_name,
            "process_rss_before_mib": rss0, "process_rss_peak_mib": sampler.peak}


def bob_scan_columns(config: Path) -> list[str]:
    from govern.config import load_settings
    from govern.deliver.governor import Governor
    from govern.mask.execute_arrow import resolve_request, scan_columns
    from govern.policy.model import local_principal

    gov = Governor(load_settings(config))
    plan = gov.plan(local_principal(gov.state.policy, PRINCIPAL), DATASET, PURPOSE)
    return scan_columns(plan, resolve_request(plan, None, None, None))


# -- one size -------------------------------------------------------------------------------------

def run_size(size_gib: float, world: Path, info: dict[str, Any], args: argparse.Namespace,
             breakdown: bool) -> dict[str, Any]:
    part_file = Path(info["part_file"])
    part_bytes = part_file.stat().st_size
    parts = max(1, math.ceil(size_gib * GIB / part_bytes))
    folder = world / "data" / "patients_parts"
    log(f"size {size_gib:g} GiB: writing {parts} part files of {part_bytes / MIB:.1f} MiB")
    t0 = time.perf_counter()
    files = grow_parts(folder, part_file, parts)
    disk = sum(f.stat().st_size for f in files)
    total_rows = parts * args.part_rows
    log(f"  {len(files)} files, {disk / GIB:.2f} GiB, {total_rows:,} rows ({time.perf_counter() - t0:.1f}s)")
    config = world / "govern.yaml"
    token = info["keys"][PRINCIPAL]
    out: dict[str, Any] = {"size_gib": size_gib, "parts": parts, "parquet_bytes": disk, "rows": total_rows,
                           "bytes_per_row": disk / total_rows}

    # 1. direct
    runs = []
    for i in range(args.direct_repeat):
        meter = OtherCpu()
        r = direct_read(folder, total_rows)
        r["other_cpus"] = note_noise(f"{size_gib:g} GiB direct {i + 1}", meter)
        if r["rows"] != total_rows:
            raise SystemExit(f"direct read returned {r['rows']} rows, expected {total_rows}")
        runs.append(r)
        log(f"  direct read {i + 1}/{args.direct_repeat}: {r['seconds']:.2f}s, "
            f"{total_rows / r['seconds'] / 1e6:.2f} M rows/s, {disk / r['seconds'] / 1e6:.0f} MB/s")
    best = min(runs, key=lambda r: r["seconds"])
    out["direct"] = {"seconds": [r["seconds"] for r in runs], "other_cpus": [r["other_cpus"] for r in runs],
                     "best_s": best["seconds"],
                     "rows_per_s": total_rows / best["seconds"], "parquet_mb_per_s": disk / best["seconds"] / 1e6,
                     "cpu_s": best["cpu_s"]}
    cols = bob_scan_columns(config)
    meter = OtherCpu()
    r = direct_read(folder, total_rows, cols)
    out["direct_bob_columns"] = {"columns": cols, "seconds": r["seconds"],
                                 "other_cpus": note_noise(f"{size_gib:g} GiB direct bob columns", meter),
                                 "rows_per_s": total_rows / r["seconds"]}
    log(f"  direct read of bob's {len(cols)} raw columns: {r['seconds']:.2f}s, "
        f"{total_rows / r['seconds'] / 1e6:.2f} M rows/s")

    # 2 + 3. gateway, fresh server
    server = Server(config, world / "serve.log")
    try:
        server.wait_ready()
        started = proc_status(server.pid)
        from govern.client import Client

        with Client(server.url, token=token, purpose=PURPOSE) as c:  # warm-up: opens the dataset
            warm = c.read(DATASET, limit=1000)
        assert warm.num_rows == 1000
        idle = proc_status(server.pid)
        log(f"  server pid {server.pid} ready on {server.url}; RSS {started['VmRSS']:.0f} MiB after start, "
            f"{idle['VmRSS']:.0f} MiB after a 1,000-row warm-up read (VmHWM {idle['VmHWM']:.0f})")
        sampler = RssSampler(server.pid, 0.1)
        cpu0 = proc_cpu_seconds(server.pid)
        meter = OtherCpu(server.pid)
        sampler.start()
        try:
            g = client_read(server.url, token, total_rows, sampler, args.rss_abort_mib)
        finally:
            sampler.stop()
        server_cpu = proc_cpu_seconds(server.pid) - cpu0
        other = note_noise(f"{size_gib:g} GiB gateway", meter)
        end = proc_status(server.pid)
        if g["rows"] != total_rows and not g["aborted"]:
            raise SystemExit(f"gateway returned {g['rows']} rows, expected {total_rows}")
        rps = g["rows"] / g["seconds"]
        out["gateway"] = {
            "seconds": g["seconds"], "rows": g["rows"], "rows_per_s": rps, "aborted_at_rss_limit": g["aborted"],
            "parquet_mb_per_s": disk * g["rows"] / total_rows / g["seconds"] / 1e6, "arrow_bytes_decoded": g["arrow_bytes"],
            "batches": g["batches"], "server_cpu_s": server_cpu, "client_cpu_s": g["client_cpu_s"],
            "server_cpu_per_wall": server_cpu / g["seconds"], "client_cpu_per_wall": g["client_cpu_s"] / g["seconds"],
            "other_cpus": other,
        }
        out["ratio_gateway_over_direct"] = rps / out["direct"]["rows_per_s"]
        out["server_memory_mib"] = {
            "rss_after_start": started["VmRSS"], "idle_rss_before": idle["VmRSS"],
            "vmhwm_before": idle["VmHWM"], "peak_rss_during_read": sampler.peak,
            "vmhwm_end": end["VmHWM"], "rss_end": end["VmRSS"], "samples": len(sampler.samples),
            "series_1s": sampler.series(1.0),
        }
        log(f"  gateway read: {g['seconds']:.1f}s, {rps / 1e6:.2f} M rows/s "
            f"(ratio {out['ratio_gateway_over_direct']:.2f}), server CPU {server_cpu:.1f}s, "
            f"client CPU {g['client_cpu_s']:.1f}s, server peak RSS {sampler.peak:.0f} MiB (VmHWM {end['VmHWM']:.0f})")

        if breakdown:
            bd: dict[str, Any] = {}
            cpu0 = proc_cpu_seconds(server.pid)
            meter = OtherCpu(server.pid)
            raw = raw_http_read(server.url, token, decode=False)
            raw["server_cpu_s"] = proc_cpu_seconds(server.pid) - cpu0
            raw["other_cpus"] = note_noise("breakdown HTTP raw bytes", meter)
            raw["rows_per_s"] = total_rows / raw["seconds"]
            bd["http_raw_bytes"] = raw
            log(f"  breakdown, HTTP body drained as bytes: {raw['seconds']:.1f}s, "
                f"{raw['rows_per_s'] / 1e6:.2f} M rows/s, {raw['body_bytes'] / raw['seconds'] / 1e6:.0f} MB/s of IPC, "
                f"server CPU {raw['server_cpu_s']:.1f}s, client CPU {raw['client_cpu_s']:.1f}s")
            cpu0 = proc_cpu_seconds(server.pid)
            meter = OtherCpu(server.pid)
            ipc = raw_http_read(server.url, token, decode=True)
            ipc["server_cpu_s"] = proc_cpu_seconds(server.pid) - cpu0
            ipc["other_cpus"] = note_noise("breakdown raw httpx + ipc", meter)
            ipc["rows_per_s"] = total_rows / ipc["seconds"]
            if ipc["rows"] != total_rows:
                raise SystemExit(f"raw httpx read returned {ipc['rows']} rows, expected {total_rows}")
            bd["http_raw_ipc_decode"] = ipc
            log(f"  breakdown, raw httpx + ipc.open_stream: {ipc['seconds']:.1f}s, "
                f"{ipc['rows_per_s'] / 1e6:.2f} M rows/s, client CPU {ipc['client_cpu_s']:.1f}s")
            out["breakdown"] = bd
    finally:
        server.stop()

    if breakdown:
        # with the server gone, so the in-process read has the machine to itself
        meter = OtherCpu()
        ip = in_process_read(config, total_rows)
        ip["other_cpus"] = note_noise("breakdown in-process Governor.read", meter)
        if ip["rows"] != total_rows:
            raise SystemExit(f"in-process read returned {ip['rows']} rows, expected {total_rows}")
        ip["rows_per_s"] = total_rows / ip["seconds"]
        ip["of_direct"] = ip["rows_per_s"] / out["direct"]["rows_per_s"]
        out["breakdown"]["in_process_governor_read"] = ip
        log(f"  breakdown, in-process Governor.read (scan + masks, no HTTP): {ip['seconds']:.1f}s, "
            f"{ip['rows_per_s'] / 1e6:.2f} M rows/s ({ip['of_direct']:.2f}x direct), CPU {ip['cpu_s']:.1f}s, "
            f"Arrow allocations peak {ip['arrow_allocated_peak_mib']:.0f} MiB")
        if not args.no_what_if:
            meter = OtherCpu()
            wi = in_process_read(config, total_rows, scan_use_threads=True)
            wi["other_cpus"] = note_noise("breakdown what-if use_threads=True", meter)
            if wi["rows"] != total_rows:
                raise SystemExit(f"what-if read returned {wi['rows']} rows, expected {total_rows}")
            wi["rows_per_s"] = total_rows / wi["seconds"]
            wi["of_direct"] = wi["rows_per_s"] / out["direct"]["rows_per_s"]
            wi["what"] = ("what-if, not govern's current code: Governor.read with the Parquet scanner's "
                          "use_threads=True (govern.storage.scan.scan passes False since apache/arrow#39808)")
            out["breakdown"]["what_if_scan_use_threads_true"] = wi
            log(f"  what-if, same read with scanner use_threads=True: {wi['seconds']:.1f}s, "
                f"{wi['rows_per_s'] / 1e6:.2f} M rows/s, CPU {wi['cpu_s']:.1f}s, "
                f"Arrow allocations peak {wi['arrow_allocated_peak_mib']:.0f} MiB")
    return out


# -- report ---------------------------------------------------------------------------------------

def machine_facts() -> dict[str, Any]:
    import httpx
    import uvicorn

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                                    text=True).stdout.strip())
    except OSError:
        rev, dirty = "", None
    return {
        "cpu_count": os.cpu_count(), "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        "platform": platform.platform(), "python": platform.python_version(),
        "pyarrow": pa.__version__, "uvicorn": uvicorn.__version__, "httpx": httpx.__version__,
        "git_rev": rev, "worktree_dirty": dirty,
    }


def evaluate(results: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = {str(r["size_gib"]): r["ratio_gateway_over_direct"] for r in results}
    peaks = {str(r["size_gib"]): r["server_memory_mib"]["peak_rss_during_read"] for r in results}
    worst_ratio = min(ratios.values())
    worst_peak = max(peaks.values())
    aborted = [str(r["size_gib"]) for r in results if r["gateway"]["aborted_at_rss_limit"]]
    first, last = results[0]["server_memory_mib"]["peak_rss_during_read"], results[-1]["server_memory_mib"]["peak_rss_during_read"]
    growth = last / first - 1 if first else 0.0
    return {
        "ratio": {"goal": f">= {RATIO_GOAL}", "what": "gateway rows/s / direct pyarrow rows/s, every size",
                  "values": ratios, "worst": worst_ratio, "aborted_sizes": aborted,
                  "result": "PASS" if worst_ratio >= RATIO_GOAL and not aborted else "MISS"},
        "rss_under_limit": {"goal": f"< {RSS_LIMIT_MIB:g} MiB", "what": "server peak VmRSS during the read, every size",
                            "values": peaks, "worst": worst_peak,
                            "result": "PASS" if worst_peak < RSS_LIMIT_MIB else "MISS"},
        "rss_flat": {"goal": f"largest size's peak <= smallest's x {1 + RSS_FLAT_GROWTH:g}",
                     "what": "server peak VmRSS, largest size vs smallest size", "growth": growth,
                     "result": ("PASS" if growth <= RSS_FLAT_GROWTH else "MISS") if len(results) > 1 else "n/a"},
    }


def print_table(results: list[dict[str, Any]], targets: dict[str, Any]) -> None:
    print()
    head = (f"{'size':>6} {'files':>5} {'GiB':>6} {'rows':>12} | {'direct Mrow/s':>13} {'MB/s':>6} | "
            f"{'gateway Mrow/s':>14} {'MB/s':>6} {'ratio':>6} | {'srv CPU/s':>9} {'cli CPU/s':>9} | "
            f"{'idle RSS':>8} {'peak RSS':>8} {'VmHWM':>6}")
    print(head)
    print("-" * len(head))
    for r in results:
        d, g, m = r["direct"], r["gateway"], r["server_memory_mib"]
        print(f"{r['size_gib']:>5g}G {r['parts']:>5} {r['parquet_bytes'] / GIB:>6.2f} {r['rows']:>12,} | "
              f"{d['rows_per_s'] / 1e6:>13.2f} {d['parquet_mb_per_s']:>6.0f} | "
              f"{g['rows_per_s'] / 1e6:>14.2f} {g['parquet_mb_per_s']:>6.0f} {r['ratio_gateway_over_direct']:>6.2f} | "
              f"{g['server_cpu_per_wall']:>9.2f} {g['client_cpu_per_wall']:>9.2f} | "
              f"{m['idle_rss_before']:>8.0f} {m['peak_rss_during_read']:>8.0f} {m['vmhwm_end']:>6.0f}"
              + ("  ABORTED (server RSS limit)" if g["aborted_at_rss_limit"] else ""))
    print("(RSS in MiB: idle = after a 1,000-row warm-up read, peak = max VmRSS sampled every 100 ms during "
          "the read; CPU/s = CPU seconds per wall second during the gateway read)")
    for r in results:
        bd = r.get("breakdown")
        if not bd:
            continue
        print(f"\nwhere the time goes at {r['size_gib']:g} GiB ({r['rows']:,} rows), M rows/s:")
        print(f"  direct pyarrow scan, all columns        {r['direct']['rows_per_s'] / 1e6:7.2f}")
        print(f"  direct pyarrow scan, bob's raw columns  {r['direct_bob_columns']['rows_per_s'] / 1e6:7.2f}")
        ip = bd["in_process_governor_read"]
        print(f"  Governor.read in-process (scan+masks)   {ip['rows_per_s'] / 1e6:7.2f}   CPU {ip['cpu_s']:.1f}s "
              f"for {ip['seconds']:.1f}s wall; Arrow allocations peak {ip['arrow_allocated_peak_mib']:.0f} MiB")
        wi = bd.get("what_if_scan_use_threads_true")
        if wi:
            print(f"  ... what-if: scanner use_threads=True   {wi['rows_per_s'] / 1e6:7.2f}   CPU {wi['cpu_s']:.1f}s "
                  f"for {wi['seconds']:.1f}s wall; Arrow allocations peak {wi['arrow_allocated_peak_mib']:.0f} MiB")
        raw = bd["http_raw_bytes"]
        print(f"  HTTP, body drained as raw bytes         {raw['rows_per_s'] / 1e6:7.2f}   server CPU "
              f"{raw['server_cpu_s']:.1f}s, client CPU {raw['client_cpu_s']:.1f}s")
        ipc = bd["http_raw_ipc_decode"]
        print(f"  HTTP, raw httpx + ipc.open_stream       {ipc['rows_per_s'] / 1e6:7.2f}   server CPU "
              f"{ipc['server_cpu_s']:.1f}s, client CPU {ipc['client_cpu_s']:.1f}s")
        g = r["gateway"]
        print(f"  HTTP, govern.client.Client.stream       {g['rows_per_s'] / 1e6:7.2f}   server CPU "
              f"{g['server_cpu_s']:.1f}s, client CPU {g['client_cpu_s']:.1f}s")
    worst = max((c for _, c in noise_log), default=0.0)
    print(f"\nother processes' CPU use during timed phases: worst {worst:.2f} CPUs"
          + (" (quiet)" if worst <= NOISY else " -- the machine was NOT quiet; re-run before quoting these numbers"))
    print()
    t = targets
    print(f"target gateway/direct >= {RATIO_GOAL}: worst {t['ratio']['worst']:.2f}  -> {t['ratio']['result']}")
    print(f"target server peak RSS < {RSS_LIMIT_MIB:g} MiB: worst {t['rss_under_limit']['worst']:.0f} MiB"
          f"  -> {t['rss_under_limit']['result']}")
    if t["rss_flat"]["result"] != "n/a":
        print(f"target server peak RSS flat across sizes (<= +{RSS_FLAT_GROWTH:.0%}): "
              f"{t['rss_flat']['growth']:+.1%}  -> {t['rss_flat']['result']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,4", help="comma-separated GiB of Parquet on disk (default 1,4)")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "gateway.json"),
                    help="where to write the results (default benchmarks/results/gateway.json)")
    ap.add_argument("--part-rows", type=int, default=2_000_000, help="patients per part file (default 2M)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--direct-repeat", type=int, default=2, help="direct reads per size; best counts")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the breakdown at the smallest size")
    ap.add_argument("--no-what-if", action="store_true",
                    help="skip the what-if read (scanner use_threads=True) in the breakdown")
    ap.add_argument("--rss-abort-mib", type=float, default=None,
                    help="stop a gateway read when the server's RSS passes this (default: 60%% of MemAvailable)")
    ap.add_argument("--tmp", default=None, help="parent folder of the temporary world (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary world")
    args = ap.parse_args()
    sizes = sorted({float(s) for s in args.sizes.split(",") if s.strip()})
    if args.rss_abort_mib is None:
        args.rss_abort_mib = 0.6 * mem_available_mib()
    if not sizes or min(sizes) <= 0:
        raise SystemExit("--sizes must be positive numbers")

    world = Path(tempfile.mkdtemp(prefix="govern-bench-gateway-", dir=args.tmp))
    started = time.time()
    results: list[dict[str, Any]] = []
    try:
        free = shutil.disk_usage(world).free
        need = math.ceil(max(sizes) * GIB * 1.1) + 2 * GIB
        if free < need:
            raise SystemExit(f"not enough disk in {world.parent}: {free / GIB:.1f} GiB free, ~{need / GIB:.1f} needed")
        log(f"world in {world}: generating {args.part_rows:,} demo patients (seed {args.seed})")
        info = build_world(world, args.part_rows, args.seed)
        log(f"  generated in {info['seconds']:.1f}s: {Path(info['part_file']).stat().st_size / MIB:.1f} MiB "
            f"({Path(info['part_file']).stat().st_size / args.part_rows:.1f} bytes/row)")
        for i, size in enumerate(sizes):
            results.append(run_size(size, world, info, args, breakdown=(i == 0 and not args.no_breakdown)))
    finally:
        if args.keep:
            log(f"kept {world}")
        else:
            shutil.rmtree(world, ignore_errors=True)
            log(f"deleted {world}")

    targets = evaluate(results)
    print_table(results, targets)
    doc = {
        "command": "python benchmarks/gateway.py " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": time.time() - started,
        "principal": PRINCIPAL, "purpose": PURPOSE, "dataset": DATASET,
        "part_rows": args.part_rows, "seed": args.seed, "rss_abort_mib": args.rss_abort_mib,
        "server": {"command": "govern serve --config <world>/govern.yaml --port <free> --no-watch",
                   "settings_changed": {"max_rows": MAX_ROWS, "log_level": "warning"},
                   "transport": "HTTP/1.1 over loopback, client and server on the same machine"},
        "notes": ("direct = pyarrow.dataset(folder).to_batches(), all columns, best of --direct-repeat; "
                  "gateway = govern.client.Client.stream, every batch consumed; files in the page cache "
                  "for both; peak RSS = max of VmRSS sampled every 100 ms during the read"),
        "machine": machine_facts(),
        "client_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "other_processes_cpus": {label: round(c, 3) for label, c in noise_log},
        "sizes": results,
        "targets": targets,
    }
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
