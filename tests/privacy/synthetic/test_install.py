"""The synthetic extra installs SDV 2.x with the pinned CPU build of torch, never CUDA."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def test_the_extra_pins_torch_to_the_cpu_build() -> None:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert "torch==2.13.0" in extras["synthetic"]
    assert any(req.startswith("sdv>=2") for req in extras["synthetic"])
    assert not any("torch" in req for name, reqs in extras.items() if name != "synthetic" for req in reqs)


def test_the_installed_torch_has_no_cuda() -> None:
    torch = pytest.importorskip("torch")
    assert torch.__version__.startswith("2.13.0")
    assert torch.version.cuda is None  # the CPU wheel: no CUDA runtime was downloaded
