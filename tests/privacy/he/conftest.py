"""Fixtures for encrypted views: plaintext helpers, secret-key markers, one gateway per module."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tenseal")

from tests.gateway import Server, World, start_server, stop_server


class Plain:
    """In-memory view vectors: a VectorSource that encrypts under a given context."""

    def __init__(self, ctx, values: dict[str, np.ndarray], selected: np.ndarray,
                 groups: dict[str, np.ndarray] | None = None) -> None:
        import tenseal as ts

        from govern.privacy.he.params import PARAMETERS

        s = PARAMETERS.slots

        def chunks(v: np.ndarray) -> list:
            padded = np.zeros(-(-len(v) // s) * s)
            padded[:len(v)] = v
            return [ts.ckks_vector(ctx, padded[i:i + s]) for i in range(0, len(padded), s)]

        self._values = {k: chunks(v) for k, v in values.items()}
        self._selected = chunks(selected)
        self._groups = {k: chunks(v) for k, v in (groups or {}).items()}

    def values(self, column: str) -> list:
        return self._values[column]

    def selected(self) -> list:
        return self._selected

    def group(self, key: str) -> list:
        return self._groups[key]


@pytest.fixture(scope="session")
def secret_ctx():
    from govern.privacy.he.params import new_secret_context

    ctx = new_secret_context()
    ctx.generate_galois_keys()
    return ctx


def secret_markers(ctx) -> list[bytes]:
    """Byte strings that appear wherever the secret key of ``ctx`` is written out: raw
    coefficient bytes, the SEAL serialization, and their base64 and hex forms."""
    import tempfile

    sk = ctx.secret_key().data
    raw = b"".join(int(sk.data().data(i)).to_bytes(8, "little") for i in range(64))
    with tempfile.NamedTemporaryFile() as fh:
        sk.save(fh.name)
        blob = Path(fh.name).read_bytes()
    pieces = [raw[8:56], blob[2000:2048], blob[len(blob) // 2:len(blob) // 2 + 48]]
    out = list(pieces)
    for p in pieces:
        for shift in range(3):
            out.append(base64.b64encode(p[shift:shift + 42])[4:48])
            out.append(base64.urlsafe_b64encode(p[shift:shift + 42])[4:48])
        out.append(p.hex().encode()[:64])
    return out


def assert_no_secret(markers: list[bytes], data: bytes, where: str) -> None:
    for m in markers:
        assert m not in data, f"secret key material found in {where}"


TRIALS_CATALOG = """
  trials:
    location: trials.parquet
    format: parquet
    level: internal
    description: A small trial with two standardized features and a 0/1 outcome.
    budget: {epsilon: 10, delta: 1.0e-6, period: month}
    columns:
      x1: {bounds: [-1, 1]}
      x2: {bounds: [-1, 1]}
      y: {bounds: [0, 1]}
"""
TRIALS_POLICY = """
p, data-scientist, dataset:trials, read, research, allow
p, data-scientist, dataset:trials, read_encrypted, research, allow
"""


def write_trials(directory: Path, rows: int = 600, seed: int = 3) -> None:
    """A dataset with a binary label, for the logistic gradient of flow 3."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    x1, x2 = rng.uniform(-1, 1, rows), rng.uniform(-1, 1, rows)
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-(1.5 * x1 - x2)))).astype(np.int64)
    pq.write_table(pa.table({"x1": x1, "x2": x2, "y": y}), directory / "data" / "trials.parquet")


def copy_world(demo_world, d: Path) -> World:
    """A private copy of the demo world (its own keys, audit, ledger), plus a ``trials``
    dataset with a 0/1 label."""
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "ledger.db*", "he_keys"))
    write_trials(d)
    with (d / "policies" / "catalog.yaml").open("a") as fh:
        fh.write(TRIALS_CATALOG)
    with (d / "policies" / "policy.csv").open("a") as fh:
        fh.write(TRIALS_POLICY)
    keys = json.loads((d / "keys.json").read_text())
    return World(d, keys)


@pytest.fixture(scope="module")
def he_world(demo_world, tmp_path_factory) -> World:
    return copy_world(demo_world, tmp_path_factory.mktemp("he") / "world")


@pytest.fixture
def own_world(demo_world, tmp_path: Path) -> World:
    """A world for one test (for tests that rotate keys or edit the policy)."""
    return copy_world(demo_world, tmp_path / "world")


@pytest.fixture(scope="module")
def he_server(he_world: World) -> Iterator[Server]:
    s = start_server(he_world, "--no-watch", "--pg-port", "0")
    yield s
    stop_server(s)
