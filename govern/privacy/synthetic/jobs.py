"""Background fits: one process per fit, a status file per model.

A fit reads a whole dataset and trains a model, which takes seconds to hours. It runs in a
separate, *spawned* process: the gateway's event loop and request threads stay free, a crash
or an out-of-memory kill takes down only the fit, and SDV's use of NumPy's global generator
cannot disturb samples served meanwhile. The child writes its progress to
``synthetic/jobs/<key>.json``; every gateway process (and ``govern synth status``) reads the
same file, so status is shared across workers. A watcher thread in the parent stops a fit
that runs past ``synthetic_fit_timeout``, and a "running" job whose process is gone is
reported as failed.

Failures are reported without quoting data: govern's own errors keep their message, anything
else (SDV, pandas) becomes its type name, since library messages can quote values.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from govern.config import Settings
from govern.errors import GovernError
from govern.logs import log_everything_as_json
from govern.mask.keys import KeyRing
from govern.privacy.synthetic.store import ModelStore
from govern.privacy.synthetic.version import ModelRef

__all__ = ["FitJobs", "run_fit"]

log = logging.getLogger("govern.synthetic")


class FitJobs:
    def __init__(self, store: ModelStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._lock = threading.Lock()

    def status(self, key: str) -> dict[str, Any] | None:
        """The job record of model ``key`` (None if no fit was ever started)."""
        path = self.store.job_path(key)
        try:
            job = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        if job.get("state") == "running" and not _alive(job):
            job.update(state="failed", error="the fit process ended without finishing", finished=_now())
            _write_job(path, job)
        return job

    def start(self, ref: ModelRef) -> dict[str, Any]:
        """Start fitting ``ref`` in a spawned process unless a fit of it is already running."""
        with self._lock:
            current = self.status(ref.key)
            if current is not None and current.get("state") == "running":
                return current
            job = _new_job(ref, os.getpid())
            _write_job(self.store.job_path(ref.key), job)
            ctx = multiprocessing.get_context("spawn")
            proc = ctx.Process(target=_child, args=(ref, self.settings), name=f"govern-fit-{ref.dataset}",
                               daemon=True)
            proc.start()
            job["pid"] = proc.pid
            _write_job(self.store.job_path(ref.key), job)
        threading.Thread(target=self._watch, args=(proc, ref.key), name="govern-fit-watch", daemon=True).start()
        return job

    def _watch(self, proc: Any, key: str) -> None:
        proc.join(self.settings.synthetic_fit_timeout)
        path = self.store.job_path(key)
        if proc.is_alive():
            proc.terminate()
            proc.join(10)
            _finish(path, "failed", f"the fit ran longer than synthetic_fit_timeout "
                                    f"({self.settings.synthetic_fit_timeout:g}s) and was stopped")
        elif proc.exitcode != 0:
            job = self.status(key) or {}
            if job.get("state") == "running":
                _finish(path, "failed", f"the fit process ended with exit code {proc.exitcode}")


def run_fit(ref: ModelRef, settings: Settings, keys: KeyRing, store: ModelStore,
            progress: Any = None) -> dict[str, Any]:
    """Fit here, in this process (the CLI and the spawned child), recording the job's progress."""
    from govern.privacy.synthetic.fit import fit_model

    path = store.job_path(ref.key)
    job = _read(path) or _new_job(ref, os.getpid())
    job.update(state="running", pid=os.getpid(), host=socket.gethostname(), stage="starting", progress=0.0)
    _write_job(path, job)
    last = [0.0]

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, fraction)
        now = time.monotonic()
        if now - last[0] >= 0.5 or fraction >= 1.0:
            last[0] = now
            job.update(stage=stage, progress=round(fraction, 3), updated=_now())
            _write_job(path, job)

    try:
        manifest = fit_model(ref, settings, keys, store, report)
    except BaseException as exc:
        message = exc.detail if isinstance(exc, GovernError) else f"fitting failed ({type(exc).__name__})"
        log.error("synthetic fit of %s failed: %s", ref.dataset, message)
        job.update(state="failed", error=message, finished=_now())
        _write_job(path, job)
        raise
    job.update(state="ready", stage="done", progress=1.0, finished=_now(), error=None)
    _write_job(path, job)
    return manifest


def _child(ref: ModelRef, settings: Settings) -> None:  # pragma: no cover - runs in the spawned process
    from govern.mask.keys import KeyRing

    log_everything_as_json(settings.log_level)  # SDV's and the fit's lines: JSON like the gateway's
    keys = KeyRing.from_settings(settings)
    store = ModelStore(settings.state_dir / "synthetic", keys)
    try:
        run_fit(ref, settings, keys, store)
    except BaseException:
        os._exit(1)


def _new_job(ref: ModelRef, pid: int) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "key": ref.key, "dataset": ref.dataset, "version": ref.version,
            "state": "running", "stage": "starting", "progress": 0.0, "pid": pid, "host": socket.gethostname(),
            "started": _now(), "updated": _now(), "finished": None, "error": None}


def _finish(path: Any, state: str, error: str | None) -> None:
    job = _read(path) or {}
    job.update(state=state, error=error, finished=_now())
    _write_job(path, job)


def _read(path: Any) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def _write_job(path: Any, job: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(job, sort_keys=True))
    os.replace(tmp, path)


def _alive(job: dict[str, Any]) -> bool:
    if job.get("host") != socket.gethostname():
        return True  # another machine's process: cannot tell, trust the record
    try:
        os.kill(int(job.get("pid") or 0), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OSError):
        return True
    return int(job.get("pid") or 0) > 0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
