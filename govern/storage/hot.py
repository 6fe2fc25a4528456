"""Small local datasets kept decoded in memory, so that a small read does not decode them again.

A read of 20 rows of a 2,000-row Parquet file decodes the whole row group first (about a
millisecond here, most of a small read's scan); a dimension table read all day is decoded all
day. :class:`HotTables` keeps such a dataset's rows as one Arrow table, tied to the *opened
dataset object* it was read from. :meth:`govern.deliver.governor.Governor.dataset` opens a new
object whenever a file is added, removed or rewritten (it lists the location on every call), so
a table can never outlive the files it was decoded from: a changed file is a new dataset and a
miss, and the old table goes with the old object (weak keys).

What is kept, and what is not:

- local Parquet only. S3 data streams from the store, so that an outage cuts a stream in flight
  the way a client can tell (docs/deployment.md); CSV has no footer to size it by;
- datasets whose files take at most ``limit / 4`` bytes on disk, and whose decoded table, counted
  twice (below), takes at most ``limit`` bytes (``limit`` is a quarter of the budget); a larger one is remembered as too
  large for as long as its dataset object lives, and never decoded twice for nothing;
- a dataset whose decode fails is not kept (nor tried again while its object lives): the
  streamed scan reads it and reports the failure where it happens, before or during the stream;
- at most ``budget`` bytes in all (``Settings.hot_table_bytes``), least recently used dropped
  first; 0 turns the cache off. A kept table counts twice its decoded size: its rows, and at
  most as much again for what reads computed from them (below).

A read filters the kept table with Arrow's own filter, as the scanner does; the first read with
a given filter keeps the positions of the rows it selected (:class:`HotTable`), and later reads
with the same filter take those rows instead of filtering again. Arrow evaluates a filter on a
table through an Acero plan, which costs about 0.15 ms of CPU and a hand-off to Arrow's threads
however few the rows; a principal's row filter is the same on every one of their reads. The
filter is recognised by its serialized form (literals' types included) and checked equal, so
two filters that print alike never share their rows. A caller may also keep a table it derived
from the rows alone (:meth:`HotTable.derived`): the governor keeps each plan's masked rows there,
so that a small read with no filter is a projection and a slice (govern.deliver.governor).

The table is decoded by the same scanner a streamed read uses, with every column, so filters and
projections applied to it (:func:`govern.storage.scan.scan`) see the same types and values.
"""

from __future__ import annotations

import pickle
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

__all__ = ["HotTable", "HotTables"]


class HotTable:
    """One dataset's rows, decoded, and what recent reads computed from them.

    The rows are immutable, so whatever is computed from them alone never changes: the
    positions of the rows a filter selected (:meth:`rows`) and tables a caller derives from
    them (:meth:`derived`, e.g. the governor's masked rows of one plan). At most
    :attr:`KEPT` of these are kept, least recently used dropped first, taking at most as many
    bytes as the rows themselves. Safe to share between threads.
    """

    KEPT = 32

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        # key -> (what the key must still match, the value or None for "failed", its bytes)
        self._kept: OrderedDict[Hashable, tuple[Any, pa.Array | pa.Table | None, int]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """What it may come to hold: the rows, and as much again in what was computed from them."""
        return 2 * self.table.nbytes

    def rows(self, filter: pc.Expression | None, columns: list[str]) -> pa.Table:
        """``columns`` of the rows ``filter`` keeps, in stored order. An expression that does not
        bind to the stored types raises Arrow's error, as the scanner's would."""
        projected = self.table.select(columns)
        if filter is None:
            return projected
        key = ("rows", pickle.dumps(filter))  # exact: an int32 1 and an int64 1 serialize differently
        hit = self._get(key, lambda kept: kept.equals(filter))
        if hit is None:
            hit = self._select(filter)
            self._put(key, filter, hit, hit.nbytes)
        return projected.take(hit)

    def derived(self, key: Hashable, owner: object, build: Callable[[], pa.Table]) -> pa.Table | None:
        """``build()``, computed once from these rows and kept under ``key`` while ``owner`` is
        the same object (the caller promises that the result depends on nothing else). None
        when ``build`` raises (then not tried again for this key): the caller takes its usual
        path, which meets the same failure where it happens."""
        key = ("derived", key)
        with self._lock:
            found = self._kept.get(key)
            if found is not None and found[0] is owner:
                self._kept.move_to_end(key)
                return found[1]  # type: ignore[return-value]
        try:
            table: pa.Table | None = build()
        except Exception:  # the caller's usual path reports it
            table = None
        self._put(key, owner, table, table.nbytes if table is not None else 0)
        return table

    def _get(self, key: Hashable, matches: Callable[[Any], bool]) -> Any:
        with self._lock:
            found = self._kept.get(key)
            if found is None or not matches(found[0]):
                return None
            self._kept.move_to_end(key)
            return found[1]

    def _put(self, key: Hashable, check: Any, value: Any, size: int) -> None:
        if size > self.table.nbytes:
            return  # not kept: it alone would pass the share
        with self._lock:
            self._kept[key] = (check, value, size)
            self._kept.move_to_end(key)
            while len(self._kept) > self.KEPT or sum(k[2] for k in self._kept.values()) > self.table.nbytes:
                self._kept.popitem(last=False)

    def _select(self, filter: pc.Expression) -> pa.Array:
        """The positions of the rows ``filter`` keeps: Arrow's filter over the rows, tagged with
        their positions under a name no column has."""
        tag = "__govern_position"
        while tag in self.table.schema.names:
            tag += "_"
        width = np.int32 if self.table.num_rows < 2**31 else np.int64
        tagged = self.table.append_column(tag, pa.array(np.arange(self.table.num_rows, dtype=width)))
        kept = tagged.filter(filter).column(tag).to_numpy()
        return pa.array(np.sort(kept))


class HotTables:
    """Decoded tables of small local Parquet datasets, within a byte budget (LRU)."""

    def __init__(self, budget: int) -> None:
        self.budget = max(0, budget)
        self.limit = self.budget // 4
        self._tables: weakref.WeakKeyDictionary[ds.Dataset, HotTable] = weakref.WeakKeyDictionary()
        self._order: OrderedDict[int, weakref.ref[ds.Dataset]] = OrderedDict()  # id -> dataset, oldest first
        self._skipped: weakref.WeakSet[ds.Dataset] = weakref.WeakSet()  # too large or unreadable: never kept
        self._lock = threading.Lock()

    def table(self, dataset: ds.Dataset) -> HotTable | None:
        """The dataset's rows, decoded (kept for the next call), or None when it is not kept."""
        if not self.budget:
            return None
        with self._lock:
            found = self._tables.get(dataset)
            if found is not None:
                self._order.move_to_end(id(dataset))
                return found
            if dataset in self._skipped or not self._eligible(dataset):
                return None
        try:  # outside the lock: a slow decode blocks no other read
            table = HotTable(dataset.to_table(use_threads=False))
        except (OSError, pa.ArrowException):
            # Unreadable (a corrupt or vanished file): not kept, and not tried again for this
            # dataset object; the streamed scan reads it and reports the failure where it is.
            with self._lock:
                self._skipped.add(dataset)
            return None
        with self._lock:
            if table.nbytes > self.limit:
                self._skipped.add(dataset)
                return None
            self._tables[dataset] = table
            self._order[id(dataset)] = weakref.ref(dataset)
            self._order.move_to_end(id(dataset))
            self._evict()
        return table

    def nbytes(self) -> int:
        """Bytes the kept tables may hold (each counts twice its rows: :attr:`HotTable.nbytes`)."""
        with self._lock:
            return sum(t.nbytes for t in self._tables.values())

    def _eligible(self, dataset: ds.Dataset) -> bool:
        if not isinstance(dataset, ds.FileSystemDataset) or not isinstance(dataset.format, ds.ParquetFileFormat):
            return False
        if not isinstance(dataset.filesystem, pafs.LocalFileSystem):
            return False
        try:
            on_disk = sum(i.size or 0 for i in dataset.filesystem.get_file_info(dataset.files))
        except (OSError, pa.ArrowException):
            return False  # the scan itself reports it, with the catalog's location
        if on_disk > self.limit // 4:
            self._skipped.add(dataset)
            return False
        return True

    def _evict(self) -> None:
        """Drop the least recently used tables until the rest fit the budget (lock held)."""
        for key, ref in list(self._order.items()):  # entries of collected datasets first
            if ref() is None:
                del self._order[key]
        total = sum(t.nbytes for t in self._tables.values())
        while total > self.budget and self._order:
            _key, ref = self._order.popitem(last=False)
            gone = ref()
            if gone is not None:
                total -= self._tables.pop(gone).nbytes
