"""What the benchmarks that start a real ``govern serve`` share: free ports, waiting until it
answers, and its peak memory. Imported as a sibling module (benchmarks run as scripts)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, seconds: float = 60) -> None:
    """Until ``url``/healthz answers 200; raises when it never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the gateway at {url} did not start within {seconds:g} s")


def peak_rss_mib(pid: int) -> float:
    """VmHWM of ``pid`` in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
