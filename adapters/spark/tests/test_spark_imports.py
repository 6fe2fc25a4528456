"""An executor installs govern's core and this adapter, nothing of the gateway: importing
govern_spark loads no web server, no OpenDP, TenSEAL or SDV, and no delivery code of govern."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("fastapi", "uvicorn", "starlette", "opendp", "tenseal", "sdv", "torch", "polars",
             "govern.deliver", "govern.server", "govern.pgwire", "govern.sql", "govern.privacy",
             "govern.client", "govern.cli")


def test_importing_the_adapter_loads_only_the_core() -> None:
    code = "import sys, govern_spark; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert "govern_spark.apply" in loaded and "govern.mask.execute_arrow" in loaded
    assert [m for m in loaded if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN)] == []
