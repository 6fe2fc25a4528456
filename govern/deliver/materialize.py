"""Masked materializations: get (or build) the stored, masked Parquet of one access plan.

The one function surfaces call is :meth:`Materializer.get_or_build`::

    found = gateway.materializer.get_or_build(principal, dataset, purpose, state=exchange.state)
    found.plan            # the AccessPlan compiled now (put it on the exchange: ex.plan = found.plan)
    found.data_version    # govern.storage.version.data_version of the dataset now
    found.entry           # govern.storage.materialized.Entry: path, size, rows, file_id, reader(), open()
    found.built           # True when this call wrote it

Contract for callers (HTTP ``/rows``, Delta Sharing files, Spark fragments, ``govern
materialize``):

- call it inside a request's lifecycle, *after* the exchange authorized ``read`` on the dataset
  (it compiles the plan again under ``state`` — the exchange's policy version — and refuses what
  the plan refuses, but the audit record is the exchange's: set ``ex.plan = found.plan`` and
  record the serve through ``finish()``/``stream()`` as a read of that plan);
- the entry holds exactly what :meth:`Governor.read` would deliver for the plan with no client
  columns, filter or limit: only visible columns, row filters applied, masks run by the Arrow
  engine (:mod:`govern.mask.execute_arrow`); nothing else is ever written;
- it is keyed by (plan hash, data version): a policy change or a data change finds no entry and
  builds a new one; stale entries age out of the LRU store;
- concurrent first calls for one key build it once per process; a build whose data changed
  while it ran is thrown away and built again (once), so an entry never mixes two versions;
- fragments (Spark, Ray, Dask): split ``entry`` by row group —
  ``pq.ParquetFile(entry.open()).metadata.num_row_groups`` groups of at most
  :data:`govern.storage.materialized.ROW_GROUP_ROWS` rows — and bind each fragment's ticket to
  ``found.plan.hash`` and ``found.data_version`` (:mod:`govern.identity.tickets`); redeeming it,
  compile the plan again and call :meth:`Materializer.find` with the data version now: a stale
  ticket is refused by ``Exchange.check_ticket`` before the store is touched.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from govern.config import Settings
from govern.deliver.governor import Governor, PolicyState
from govern.errors import StorageError
from govern.identity.principal import Principal
from govern.plan.model import AccessPlan
from govern.storage.materialized import Entry, MaterializationStore, open_store
from govern.storage.version import data_version

__all__ = ["Materialized", "Materializer"]


@dataclass(frozen=True)
class Materialized:
    plan: AccessPlan
    data_version: str
    entry: Entry
    built: bool


class Materializer:
    """The materialization store of one gateway (or one CLI run) and the Governor that fills it."""

    def __init__(self, governor: Governor, store: MaterializationStore | None = None, *,
                 settings: Settings | None = None) -> None:
        self.governor = governor
        self._store = store
        self._settings = settings or governor.settings
        self._lock = threading.Lock()

    @property
    def store(self) -> MaterializationStore:
        """The store, opened on first use (a gateway that never materializes creates no folder)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = open_store(self._settings)
        return self._store

    @property
    def enabled(self) -> bool:
        return self._settings.materialize_max_bytes > 0

    def data_version(self, dataset: str, state: PolicyState | None = None) -> str:
        """The dataset's data version now (:func:`govern.storage.version.data_version`)."""
        state = state or self.governor.state
        location = state.policy.datasets[dataset].location
        return data_version(self.governor.dataset(dataset, state), location)

    def find(self, plan: AccessPlan, version: str) -> Entry | None:
        return self.store.get(plan.hash, version)

    def get_or_build(self, principal: Principal, dataset: str, purpose: str, *,
                     state: PolicyState | None = None) -> Materialized:
        """The materialization of ``principal``'s plan on ``dataset`` for ``purpose`` under
        ``state``, built now if the store has none for the data as it is now."""
        state = state or self.governor.state
        plan = self.governor.plan(principal, dataset, purpose, state=state)
        for _attempt in range(2):
            version = self.data_version(dataset, state)
            found = self.store.get(plan.hash, version)
            if found is not None:
                return Materialized(plan, version, found, built=False)
            with self.store.building(plan.hash, version):
                found = self.store.get(plan.hash, version)  # another request built it meanwhile
                if found is not None:
                    return Materialized(plan, version, found, built=False)
                read = self.governor.read(principal, dataset, purpose, state=state)
                if read.plan.hash != plan.hash:  # pragma: no cover - one state, one plan
                    raise StorageError("the plan changed while a materialization was built")
                try:
                    entry = self.store.put(plan.hash, version, read.reader)
                finally:
                    read.reader.close()
            if self.data_version(dataset, state) == version:
                return Materialized(plan, version, entry, built=True)
            self.store.delete(entry.path)  # the data changed under the build: never keep a mix
        raise StorageError(f"dataset '{dataset}' kept changing while it was materialized; try again")
