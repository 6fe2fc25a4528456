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
- datasets whose files take at most ``limit / 4`` bytes on disk, and whose decoded table takes at
  most ``limit`` bytes (``limit`` is a quarter of the budget); a larger one is remembered as too
  large for as long as its dataset object lives, and never decoded twice for nothing;
- a dataset whose decode fails is not kept (nor tried again while its object lives): the
  streamed scan reads it and reports the failure where it happens, before or during the stream;
- at most ``budget`` bytes in all (``Settings.hot_table_bytes``), least recently used dropped
  first; 0 turns the cache off.

The table is decoded by the same scanner a streamed read uses, with every column, so filters and
projections applied to it (:func:`govern.storage.scan.scan`) see the same types and values.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

__all__ = ["HotTables"]


class HotTables:
    """Decoded tables of small local Parquet datasets, within a byte budget (LRU)."""

    def __init__(self, budget: int) -> None:
        self.budget = max(0, budget)
        self.limit = self.budget // 4
        self._tables: weakref.WeakKeyDictionary[ds.Dataset, pa.Table] = weakref.WeakKeyDictionary()
        self._order: OrderedDict[int, weakref.ref[ds.Dataset]] = OrderedDict()  # id -> dataset, oldest first
        self._skipped: weakref.WeakSet[ds.Dataset] = weakref.WeakSet()  # too large or unreadable: never kept
        self._lock = threading.Lock()

    def table(self, dataset: ds.Dataset) -> pa.Table | None:
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
            table = dataset.to_table(use_threads=False)
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
        """Bytes of the tables kept now."""
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
