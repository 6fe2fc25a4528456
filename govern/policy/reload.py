"""Hot reload with last-known-good.

A watcher thread (watchfiles) re-reads the policy folder after each change. A valid policy is
installed atomically; an invalid one is refused and the previous policy keeps serving, while
``status()`` reports the problems (``file:line: message``) for ``/readyz``. ``report`` (if set)
hears of every install and every refusal, with the version served before it — the gateway
writes an audit record for each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from govern.errors import Problem
from govern.policy.load import read_policy
from govern.policy.model import PolicySet


@dataclass
class ReloadStatus:
    version: str
    loaded_at: float
    problems: list[Problem] = field(default_factory=list)
    rejected_at: float | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


class PolicyReloader:
    def __init__(self, directory: Path, current: PolicySet, install: Callable[[PolicySet], None], *,
                 debounce_ms: int = 300) -> None:
        self.directory = Path(directory)
        self._install = install
        self._debounce_ms = debounce_ms
        self._status = ReloadStatus(current.version, time.time())
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.report: Callable[[str, ReloadStatus], None] | None = None

    def status(self) -> ReloadStatus:
        return self._status

    def check_now(self) -> ReloadStatus:
        """Re-read the folder; install if valid and changed, else keep serving the old one."""
        with self._lock:
            before = self._status.version
            policy, problems = read_policy(self.directory)
            changed = False
            if problems or policy is None:
                changed = [str(p) for p in problems] != [str(p) for p in self._status.problems]
                self._status = ReloadStatus(before, self._status.loaded_at, list(problems), time.time())
            elif policy.version != before or self._status.problems:
                if policy.version != before:
                    self._install(policy)
                    changed = True
                self._status = ReloadStatus(policy.version, time.time())
            status = self._status
        if changed and self.report is not None:
            self.report(before, status)
        return status

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="govern-policy-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        from watchfiles import watch

        for _changes in watch(self.directory, stop_event=self._stop, debounce=self._debounce_ms,
                              rust_timeout=500, yield_on_timeout=False, raise_interrupt=False):
            try:
                self.check_now()
            except Exception:
                continue
