"""Synthetic views for the gateway and the CLI: find or fit the model, sample, apply the plan,
and write the report.

The design choice that matters: the model learns the *plan-independent* source data (minus
direct identifiers, which are generated), once per data version and configuration; each
request then gets the principal's plan applied to the synthetic rows by the same Arrow engine
that masks real rows. So withheld columns are absent, masks and cell rules apply, and one model
serves every principal. A row filter therefore filters *synthetic* rows: an EU-only analyst
receives the synthetic rows whose region is EU, fewer than ``rows`` (the report says how many).
"""

from __future__ import annotations

import logging
import secrets
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from govern.config import Settings
from govern.deliver.governor import Governor
from govern.errors import GovernError, LimitExceeded, SyntheticError
from govern.mask.execute_arrow import execute
from govern.plan.model import AccessPlan
from govern.privacy.synthetic import engine
from govern.privacy.synthetic.jobs import FitJobs, run_fit
from govern.privacy.synthetic.sample import LoadedModel, load_model, sample_rows
from govern.privacy.synthetic.store import ModelStore
from govern.privacy.synthetic.version import ModelRef, model_ref

__all__ = ["REPORT_METADATA_KEY", "SyntheticResult", "SyntheticService"]

REPORT_METADATA_KEY = b"govern.synthetic.report"
log = logging.getLogger("govern.synthetic")
_CACHE_SIZE = 4


@dataclass
class SyntheticResult:
    table: pa.Table
    report: dict[str, Any]


class SyntheticService:
    """One per gateway (or CLI run). Cheap to build: SDV is imported on first use."""

    def __init__(self, settings: Settings, governor: Governor) -> None:
        self.settings = settings
        self.governor = governor
        self._store: ModelStore | None = None
        self._jobs: FitJobs | None = None
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    # -- wiring --------------------------------------------------------------------------------
    @property
    def store(self) -> ModelStore:
        if self._store is None:
            self._store = ModelStore(self.settings.state_dir / "synthetic", self.governor.keys)
        return self._store

    @property
    def jobs(self) -> FitJobs:
        if self._jobs is None:
            self._jobs = FitJobs(self.store, self.settings)
        return self._jobs

    @staticmethod
    def require_available() -> None:
        """Unsupported (501) when the synthetic extra is not installed."""
        engine.require_sdv()

    # -- models --------------------------------------------------------------------------------
    def reference(self, name: str) -> ModelRef:
        """The model key for dataset ``name`` as it is in storage now."""
        state = self.governor.state
        dataset = self.governor.dataset(name, state)
        return model_ref(state.policy, name, dataset, self.governor.schema(name, state))

    def model(self, ref: ModelRef) -> LoadedModel | None:
        """The fitted model for ``ref``, loaded (and verified) once, or None if not fitted."""
        with self._lock:
            cached = self._cache.get(ref.key)
            if cached is not None:
                self._cache.move_to_end(ref.key)
                return cached
        try:
            loaded = load_model(self.store, ref.key)
        except GovernError:
            raise
        except Exception as exc:  # e.g. a model pickled by another SDV version
            log.error("loading synthetic model %s failed: %s", ref.key, type(exc).__name__)
            raise SyntheticError(f"the stored synthetic model cannot be loaded ({type(exc).__name__}); "
                                 f"refit it (govern synth fit {ref.dataset} --force)") from None
        if loaded is None:
            return None
        with self._lock:
            self._cache[ref.key] = loaded
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return loaded

    def status(self, ref: ModelRef) -> dict[str, Any]:
        """What a caller may know about the model: state, progress, and the fit-time reports."""
        manifest = self.store.manifest(ref.key)
        job = self.jobs.status(ref.key)
        out: dict[str, Any] = {"dataset": ref.dataset, "model": ref.key, "data_version": ref.version,
                               "synthesizer": ref.spec.to_dict()}
        if manifest is not None:
            out.update(state="ready", fitted=manifest["created"], rows=manifest["rows"],
                       seconds=manifest["seconds"], reports=manifest["reports"],
                       identifiers=manifest["identifiers"], columns=manifest["roles"])
        elif job is None:
            out.update(state="absent")
        else:
            out.update(state=job["state"] if job["state"] != "ready" else "absent",
                       stage=job.get("stage"), progress=job.get("progress"), started=job.get("started"),
                       error=job.get("error"))
        return out

    def ensure_fit(self, ref: ModelRef) -> dict[str, Any]:
        """Start a background fit of ``ref`` unless one is running; returns the job record."""
        self.require_available()
        return self.jobs.start(ref)

    def fit_now(self, ref: ModelRef, progress: Any = None, *, force: bool = False) -> dict[str, Any]:
        """Fit in this process (``govern synth fit``); reuses a stored model unless ``force``."""
        self.require_available()
        if not force:
            manifest = self.store.manifest(ref.key)
            if manifest is not None:
                return manifest
        return run_fit(ref, self.settings, self.governor.keys, self.store, progress)

    # -- sampling ------------------------------------------------------------------------------
    def synthesize(self, ref: ModelRef, model: LoadedModel, plan: AccessPlan, rows: int,
                   seed: int | None) -> SyntheticResult:
        """``rows`` synthetic rows with ``plan`` applied, and their report (stored)."""
        if rows > self.settings.synthetic_max_rows:
            raise LimitExceeded(f"rows may be at most {self.settings.synthetic_max_rows}",
                                limit=self.settings.synthetic_max_rows)
        seeded = seed is not None
        used = seed if seed is not None else secrets.randbits(63)
        digest_key = self.governor.keys.subkey("synthetic-rows", model.manifest["key_id"])
        try:
            sampled = sample_rows(model, ref, rows, used, digest_key)
        except GovernError:
            raise
        except Exception as exc:  # a library failure: no rows, a clear error, an audit record
            log.error("sampling synthetic model %s failed: %s", ref.key, type(exc).__name__)
            raise SyntheticError(f"sampling the synthetic model failed ({type(exc).__name__})") from None
        reader = execute(plan, sampled.table.to_reader(), self.governor.keys,
                         threads=self.settings.mask_threads)
        out = reader.read_all()
        report = self._report(ref, model, plan, rows, used, seeded, sampled.rejected_copies, out.num_rows)
        self.store.save_report(report["id"], report)
        meta = dict(out.schema.metadata or {})
        meta[REPORT_METADATA_KEY] = _json(report)
        return SyntheticResult(out.replace_schema_metadata(meta), report)

    def report(self, report_id: str) -> dict[str, Any]:
        return self.store.report(report_id)

    def _report(self, ref: ModelRef, model: LoadedModel, plan: AccessPlan, rows: int, seed: int, seeded: bool,
                rejected: int, delivered: int) -> dict[str, Any]:
        m = model.manifest
        fit_privacy = m["reports"]["privacy"]
        notes = []
        if plan.row_filters:
            notes.append("your plan's row filters were applied to the synthetic rows, so fewer rows than "
                         "requested may be delivered")
        withheld = [c.name for c in plan.columns if not c.visible]
        if withheld:
            notes.append(f"withheld by your plan: {', '.join(withheld)}")
        return {
            "id": uuid.uuid4().hex,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "dataset": ref.dataset,
            "principal": plan.principal,
            "purpose": plan.purpose,
            "plan_hash": plan.hash,
            "rows_requested": rows,
            "rows": delivered,
            "seed": seed,
            "seeded": seeded,
            "model": {"key": ref.key, "data_version": ref.version, "synthesizer": m["synthesizer"],
                      "fitted": m["created"], "rows": m["rows"], "libraries": m["libraries"]},
            "quality": m["reports"]["quality"],
            "privacy": {
                "exact_copies": 0,
                "rejected_copies": rejected,
                "compared_columns": ref.learned,
                "method": "every sampled row is compared with every real row on the learned columns "
                          "(keyed digests); equal rows are dropped before delivery",
                "identifiers": m["identifiers"],
                "fit_reference": fit_privacy,
                **({"dp": m["dp"], "method": "differentially private fit: the model saw one row per person and "
                    "its every use of the data was noised by OpenDP under the (epsilon, delta) charged to the "
                    "steward; rows are released as drawn (no comparison with real rows, which would fall "
                    "outside the guarantee)"} if "dp" in m else {}),
            },
            "notes": notes,
        }


def _json(report: dict[str, Any]) -> bytes:
    import json

    return json.dumps(report, sort_keys=True, default=str).encode()

