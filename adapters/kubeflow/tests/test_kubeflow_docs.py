"""docs/adapters.md's Kubeflow start runs as written: the Tier 1 start's shell commands and
``govern serve`` (on a free port), then the Kubeflow Python in that folder."""

# no `from __future__ import annotations`: kfp reads component signatures as types

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.gateway import free_port  # noqa: E402

pytestmark = pytest.mark.xdist_group("kubeflow")

DOC = ROOT / "docs" / "adapters.md"


def code(title: str, language: str) -> list[str]:
    text = re.split(r"\n##+ ", DOC.read_text().split(title, 1)[1], maxsplit=1)[0]
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_kubeflow_in_five_minutes(tmp_path, monkeypatch) -> None:
    setup, serve = code("### Tier 1 in five minutes", "bash")
    (python,) = code("### Kubeflow in five minutes", "python")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-euo", "pipefail", "-c", setup], cwd=tmp_path, check=True, capture_output=True, env=env)
    port = free_port()
    command = serve.strip().replace("--port 8000", f"--port {port} --pg-port 0 --flight-port 0")
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("GOVERN_API_KEY", raising=False)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(python.replace("http://127.0.0.1:8000", url), str(DOC), "exec"), {})
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    lines = out.getvalue().splitlines()
    mode = next(line for line in lines if line.startswith("reference "))
    assert re.fullmatch(r"reference [0-9a-f]{12} [0-9a-f]{32}", mode)
    reference, _end = json.JSONDecoder().raw_decode(out.getvalue().split(mode, 1)[1].strip())
    assert reference["dataset"] == "patients" and reference["purpose"] == "model-training"
