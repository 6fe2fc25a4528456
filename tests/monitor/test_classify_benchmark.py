"""The classification benchmark runs as anyone runs it, on a small size, and meets its F1
targets (F1 ≥ 0.95 for types with a check digit, ≥ 0.85 for SSN, phone and email). Timing is
not asserted here: performance claims live in benchmarks/ and docs/performance.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~7 s: generates and classifies 120 labelled columns
def test_classify_benchmark_meets_its_f1_targets(tmp_path: Path) -> None:
    out = tmp_path / "classify.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "classify.py"), "--worlds", "2", "--columns", "60",
                          "--rows", "1000", "--pool", "150", "--repeat", "1", "--seed", "7", "--json", str(out)],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.exists(), run.stdout + run.stderr
    result = json.loads(out.read_text())
    scores, targets = result["scores"], result["targets"]
    assert set(scores) == {"payment_card", "iban", "national_id", "ssn", "phone", "email"}
    for kind, score in scores.items():
        assert score["columns"] >= 5, kind  # enough positives for the F1 to mean something
        assert score["f1"] >= targets[kind], (kind, score, run.stdout)
