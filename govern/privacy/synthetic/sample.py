"""Sample synthetic rows from a stored model, in the dataset's own schema.

Per request: the learned columns come from the synthesizer in chunks, every row that equals a
real row on all learned columns is dropped (keyed digests, see ``digests``) and replaced by
more sampling; generated identifiers are drawn from their pools; excluded columns are null.
All randomness follows from the request seed, so the same seed on the same model gives the
same table; the principal's plan is applied afterwards, by the caller, like on real rows.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from govern.errors import SyntheticError
from govern.privacy.synthetic import engine
from govern.privacy.synthetic.digests import contains, row_digests
from govern.privacy.synthetic.frames import from_frame
from govern.privacy.synthetic.identifiers import IdentifierPool, draw
from govern.privacy.synthetic.store import ModelStore
from govern.privacy.synthetic.version import ModelRef

__all__ = ["CHUNK_ROWS", "LoadedModel", "Sampled", "load_model", "sample_rows"]

CHUNK_ROWS = 50_000  # rows per synthesizer call: the SDV lock is released between chunks
MAX_ROUNDS = 20  # sampling rounds before giving up on finding rows that are not copies


@dataclass
class LoadedModel:
    key: str
    manifest: dict[str, Any]
    synthesizer: Any
    digests: np.ndarray
    pools: dict[str, IdentifierPool]


@dataclass
class Sampled:
    table: pa.Table
    seed: int
    rejected_copies: int = 0
    rounds: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def load_model(store: ModelStore, key: str) -> LoadedModel | None:
    """The verified model ``key`` from the store, or None if it was never fitted."""
    manifest = store.manifest(key)
    if manifest is None:
        return None
    synthesizer = engine.loads(store.read(key, manifest, "model.pkl"))
    digests = np.load(io.BytesIO(store.read(key, manifest, "digests.npy")), allow_pickle=False)
    pools_raw = json.loads(store.read(key, manifest, "pools.json"))
    pools = {name: IdentifierPool.from_dict(d) for name, d in pools_raw.items()}
    return LoadedModel(key, manifest, synthesizer, digests, pools)


def sample_rows(model: LoadedModel, ref: ModelRef, rows: int, seed: int, digest_key: bytes) -> Sampled:
    """``rows`` synthetic rows with the schema ``ref.schema`` (fields in storage order)."""
    seq = np.random.SeedSequence(seed)
    model_seed, id_seed = (int(w) for w in seq.generate_state(2, dtype=np.uint64))
    learned = ref.learned
    parts: list[pa.Table] = []
    have = rejected = rounds = 0
    while have < rows:
        if rounds >= MAX_ROUNDS:
            raise SyntheticError("could not sample enough rows that differ from every real row; "
                                 "the model reproduces the real data too closely")
        want = min(CHUNK_ROWS, rows - have)
        frame = engine.sample(model.synthesizer, want, (model_seed + rounds) % 2**63)
        rounds += 1
        chunk = pa.table(from_frame(frame, ref.roles, ref.schema))
        if "dp" in model.manifest:  # a DP model's rows are released as drawn: dropping those equal to
            parts.append(chunk.slice(0, rows - have))  # a real row would make the output depend on
            have += min(chunk.num_rows, rows - have)  # real rows outside the (epsilon, delta) guarantee
            continue
        copies = contains(model.digests, row_digests(chunk, learned, digest_key))
        if copies.any():
            rejected += int(copies.sum())
            chunk = chunk.filter(pa.array(~copies))
        chunk = chunk.slice(0, rows - have)
        parts.append(chunk)
        have += chunk.num_rows
    learned_table = pa.concat_tables(parts) if parts else pa.table(
        {c: pa.array([], ref.schema.field(c).type) for c in learned})
    rng = np.random.default_rng(id_seed)
    arrays = []
    for f in ref.schema:
        role = next(r for r in ref.roles if r.name == f.name)
        if role.role == "model":
            arrays.append(learned_table.column(f.name).combine_chunks())
        elif role.role == "generate":
            pool = model.pools.get(f.name)
            if pool is None:
                raise SyntheticError(f"the stored model has no generator for column '{f.name}'; refit it")
            arrays.append(draw(pool, rows, rng, f.type))
        else:
            arrays.append(pa.nulls(rows, f.type))
    table = pa.Table.from_arrays(arrays, schema=ref.schema.remove_metadata())
    return Sampled(table, seed, rejected, rounds)
