"""Fit one model: read the real data, learn it, measure the result, store it.

Steps (each reports progress through ``progress(stage, fraction)``):

1. **read** — one streaming pass over the whole dataset digests every real row's learned
   columns (for the exact-copy check) and builds the generated-identifier pools; the training
   rows are the whole dataset, or a seeded uniform sample of ``synthetic_fit_rows`` rows.
2. **fit** — a seeded 80/20 split keeps a holdout the model never sees (for the overfitting
   test); the synthesizer learns the other 80 %.
3. **evaluate** — a reference sample (up to 5,000 rows) is compared with the training rows:
   SDV's quality report, exact copies of real rows, and distance to closest record against a
   random baseline and against the holdout.
4. **save** — model, digests, pools and the manifest with the reports go to the store.

Runs inside the fit process (``jobs``) or the CLI (``govern synth fit``), never on a request
thread. The synthesizer's seeds derive from the model key, so fitting the same data twice gives
the same model; the generated-identifier pools use a fresh secret seed (``identifiers``), so
nobody can regenerate a pool from the key that reports show.
"""

from __future__ import annotations

import io
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from govern.config import Settings
from govern.deliver.governor import Governor
from govern.errors import SyntheticError
from govern.mask.keys import KeyRing
from govern.policy.model import local_principal
from govern.privacy.budget.ledger import open_ledger
from govern.privacy.synthetic import engine
from govern.privacy.synthetic.digests import contains, digest_set, row_digests
from govern.privacy.synthetic.frames import from_frame, metadata_dict, to_frame
from govern.privacy.synthetic.identifiers import PoolBuilder
from govern.privacy.synthetic.mst import ColumnDomain, domains_for
from govern.privacy.synthetic.store import ModelStore
from govern.privacy.synthetic.version import ModelRef
from govern.storage import scan as storage_scan

__all__ = ["Progress", "fit_model"]

Progress = Callable[[str, float], None]

REFERENCE_ROWS = 5_000  # synthetic rows sampled at fit time for the reports
QUALITY_ROWS = 20_000  # real rows the quality report compares against (a seeded sample)
DCR_ROWS = 500  # rows per side in the distance-to-closest-record metrics (pairwise: quadratic)
HOLDOUT_MIN_ROWS = 50  # below this many rows there is no holdout (and no overfitting test)


def fit_model(ref: ModelRef, settings: Settings, keys: KeyRing, store: ModelStore,
              progress: Progress | None = None) -> dict[str, Any]:
    """Fit, evaluate and store the model ``ref`` names. Returns its manifest."""
    say = progress or (lambda stage, fraction: None)
    engine.require_sdv()
    started = time.perf_counter()
    seed = int(ref.key[:8], 16)
    rng = np.random.default_rng(seed)
    digest_key = keys.subkey("synthetic-rows")
    table_name = ref.dataset

    if not ref.learned:
        raise SyntheticError("the dataset has no column the synthesizer can learn")
    dp = prepare_dp_fit(ref, settings) if ref.spec.dp else None  # checked and charged before any read
    unit = dp.unit if dp is not None else None
    say("reading", 0.02)
    dataset = storage_scan.open_dataset(ref.location, ref.format, settings)
    total = dataset.count_rows()
    if total == 0:
        raise SyntheticError("the dataset has no rows to learn from")
    fit_rows = min(total, max(1, settings.synthetic_fit_rows))
    # identifier pools from a secret seed of this fit, never from the model key that reports show
    builders = {r.name: PoolBuilder(r.name, r.kind or "id", ref.schema.field(r.name).type, fit_rows,
                                    secrets.randbits(63)) for r in ref.generated}
    digests = []
    wanted = ref.learned + [r.name for r in ref.generated]
    keep = ref.learned + ([unit] if unit is not None and unit not in ref.learned else [])
    if unit is not None and unit not in wanted:
        wanted.append(unit)
    reader = storage_scan.scan(dataset, wanted, None, settings.batch_size, location=ref.location)
    training: list[pa.RecordBatch] = []
    seen = 0
    for batch in reader:
        digests.append(row_digests(batch, ref.learned, digest_key))
        for name, builder in builders.items():
            builder.update(batch.column(name))
        if fit_rows == total:
            training.append(batch.select(keep))
        seen += batch.num_rows
        say("reading", 0.02 + 0.18 * seen / total)
    real_digests = digest_set(digests)
    pools = {name: b.result() for name, b in builders.items()}
    if fit_rows == total:
        train_table = pa.Table.from_batches(training, schema=pa.schema([ref.schema.field(c) for c in keep]))
    else:
        picks = np.sort(rng.choice(total, size=fit_rows, replace=False))
        train_table = dataset.take(pa.array(picks), columns=keep)
    if unit is not None:  # a DP fit learns one row per person: neighbouring datasets differ by one row
        train_table = one_row_per_unit(train_table, unit, rng).select(ref.learned)
    frame = to_frame(train_table, ref.roles)

    order = rng.permutation(len(frame))
    holdout_n = len(frame) // 5 if len(frame) >= HOLDOUT_MIN_ROWS else 0
    holdout = frame.iloc[order[:holdout_n]].reset_index(drop=True) if holdout_n else None
    train = frame.iloc[order[holdout_n:]].reset_index(drop=True)

    say("fitting", 0.2)
    metadata = metadata_dict(table_name, ref.roles)
    synthesizer = engine.new_synthesizer(ref.spec, metadata, dp.domains if dp is not None else None)
    fit_started = time.perf_counter()
    engine.fit(synthesizer, table_name, train, seed)
    fit_seconds = time.perf_counter() - fit_started

    say("evaluating", 0.75)
    reports = evaluate(ref, synthesizer, train, holdout, metadata, real_digests, digest_key, seed)

    say("saving", 0.95)
    buf = io.BytesIO()
    np.save(buf, real_digests, allow_pickle=False)
    manifest = {
        "key": ref.key,
        "dataset": ref.dataset,
        "version": ref.version,
        "synthesizer": ref.spec.to_dict(),
        "roles": [r.to_dict() for r in ref.roles],
        "metadata": metadata,
        "table_name": table_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": {"real": total, "fit": len(frame), "train": len(train), "holdout": holdout_n},
        "seconds": {"fit": round(fit_seconds, 3), "total": round(time.perf_counter() - started, 3)},
        "libraries": engine.versions(),
        "reports": reports,
        "identifiers": [p.describe() for p in pools.values()],
        **({"dp": {**synthesizer.describe(), "steward": ref.spec.steward, "charge": dp.charge,
                   "unit": unit}} if dp is not None else {}),
    }
    store.save(ref.key, manifest, {
        "model.pkl": engine.dumps(synthesizer),
        "digests.npy": buf.getvalue(),
        "pools.json": json.dumps({n: p.to_dict() for n, p in pools.items()}).encode(),
    })
    store.prune_models(ref.dataset)
    say("done", 1.0)
    return manifest


@dataclass
class DpFit:
    """What a DP fit needs besides the data: the columns' domains, the privacy unit, the charge."""

    domains: list[ColumnDomain]
    unit: str | None
    charge: dict[str, Any]


def prepare_dp_fit(ref: ModelRef, settings: Settings) -> DpFit:
    """Check a DP synthesizer can learn every column (domains from the catalog and its params,
    no data read), then charge its (epsilon, delta) to the steward's budget on the dataset —
    before the data is read, so a refused charge reads nothing and a failed fit stays paid for
    (the ledger never refunds)."""
    governor = Governor(settings.model_copy(update={"watch_policies": False}))
    policy = governor.state.policy
    entry = policy.datasets.get(ref.dataset)
    if entry is None:
        raise SyntheticError(f"dataset '{ref.dataset}' is no longer in the catalog")
    kinds = {r.name: r.kind or "categorical" for r in ref.roles if r.role == "model"}
    bounds = {c.name: c.bounds for c in entry.columns.values() if c.bounds is not None}
    public = {c.name for c in entry.columns.values() if c.public_values}
    domains = domains_for(kinds, bounds, public, ref.spec.kwargs)  # type: ignore[arg-type]
    steward = ref.spec.steward
    assert steward is not None  # the spec parser insists
    params = ref.spec.kwargs
    epsilon, delta = float(params["epsilon"]), float(params.get("delta", 0.0))
    ledger = open_ledger(settings, governor.budget_for)
    try:
        charged = ledger.charge(local_principal(policy, steward), ref.dataset, epsilon, delta,
                                request_id=f"synthetic-fit:{ref.key}:{uuid.uuid4().hex[:8]}", kind="synthetic")
    finally:
        ledger.close()
    return DpFit(domains, entry.privacy_unit, charged.to_dict())


def one_row_per_unit(table: pa.Table, unit: str, rng: np.random.Generator) -> pa.Table:
    """One row of each privacy unit, chosen at random (seeded); rows without a unit are dropped."""
    if table.num_rows == 0:
        return table
    order = rng.permutation(table.num_rows)
    units = table.column(unit).take(pa.array(order)).to_pylist()
    seen: set[Any] = set()
    picks = []
    for i, u in zip(order.tolist(), units, strict=True):
        if u is not None and u not in seen:
            seen.add(u)
            picks.append(i)
    return table.take(pa.array(sorted(picks), pa.int64()))


def evaluate(ref: ModelRef, synthesizer: Any, train: pd.DataFrame, holdout: pd.DataFrame | None,
             metadata: dict, real_digests: np.ndarray, digest_key: bytes, seed: int) -> dict[str, Any]:
    """Quality and privacy of a reference sample, measured against the training rows."""
    n_ref = max(1, min(len(train), REFERENCE_ROWS))
    reference = engine.sample(synthesizer, n_ref, seed + 1)
    real = train.sample(min(len(train), QUALITY_ROWS), random_state=seed % 2**32) if len(train) else train
    quality = engine.quality(real, reference, metadata)
    ref_table = pa.table(from_frame(reference, ref.roles, ref.schema))
    copies = int(contains(real_digests, row_digests(ref_table, ref.learned, digest_key)).sum())
    subsample = min(DCR_ROWS, len(train), len(reference), *([len(holdout)] if holdout is not None else []))
    privacy: dict[str, Any] = {
        "reference_rows": n_ref,
        "exact_copies": copies,
        "exact_copies_note": "rows of the reference sample equal to a real row on every learned column, "
                             "before filtering; served rows never include such copies",
    }
    if subsample >= 2:
        privacy["dcr"] = engine.dcr(train, reference, holdout, metadata, ref.dataset, subsample)
    return {"quality": quality, "privacy": privacy}
