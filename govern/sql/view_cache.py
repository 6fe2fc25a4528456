"""Masked views kept in memory between queries: an analyst's second query over the same
columns does not scan and mask them again.

Why it is safe to share. An entry is the *output* of a governed read — masked, row-filtered,
withheld columns absent — never raw data, and its key holds everything that output depends on:

- the access plan's hash, which covers the principal, the purpose, the policy version, the
  masking key id, every column's action and parameters, row filters with the subject's
  attribute values bound, and cell rules: a policy reload, a key change or another principal
  gives another key, so an entry is only ever served to the plan that produced it;
- the columns read, in order;
- the files' snapshot (path, size, mtime of each): data rewritten in place gives another key,
  and the entries of the old version are dropped when the new one is first seen.

Every mask is keyed and deterministic (noise, randomized response and date shifts derive their
randomness from HMAC, not from a generator), so a cached view is bit for bit what a new read
would produce. Only complete reads are stored: a read without a pushed-down filter or limit
that ran to its end; one the consumer stopped early, or that failed, stores nothing.

Memory: entries are evicted least-recently-used beyond ``max_bytes`` (``sql_cache_bytes``);
one entry may take at most a quarter of it. ``max_bytes = 0`` turns the cache off.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator

import pyarrow as pa

__all__ = ["ViewCache"]


class ViewCache:
    """A thread-safe LRU of masked Arrow tables, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._entries: OrderedDict[tuple[Hashable, ...], pa.Table] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[Hashable, ...]) -> pa.Table | None:
        with self._lock:
            table = self._entries.get(key)
            if table is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return table

    def put(self, key: tuple[Hashable, ...], table: pa.Table) -> bool:
        """Store ``table`` under ``key``; ``False`` when it is larger than a quarter of the budget.
        Entries with the same key prefix (plan, columns) but another snapshot are dropped: that
        data version is gone."""
        size = table.get_total_buffer_size()
        if not self.enabled or size > self.max_bytes // 4:
            return False
        with self._lock:
            for old in [k for k in self._entries if k[:-1] == key[:-1] and k != key]:
                self._bytes -= self._entries.pop(old).get_total_buffer_size()
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= previous.get_total_buffer_size()
            self._entries[key] = table
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.get_total_buffer_size()
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def filling(self, key: tuple[Hashable, ...], reader: pa.RecordBatchReader,
                max_rows: int, on_store: Callable[[], None] | None = None) -> pa.RecordBatchReader:
        """``reader``, unchanged for its consumer, that stores what it delivered once it has
        delivered everything (at most ``max_rows`` rows and within the entry budget)."""

        def batches() -> Iterator[pa.RecordBatch]:
            kept: list[pa.RecordBatch] = []
            rows = size = 0
            keeping = True
            for batch in reader:
                if keeping:
                    rows += batch.num_rows
                    size += batch.get_total_buffer_size()
                    keeping = rows <= max_rows and size <= self.max_bytes // 4
                    if keeping:
                        kept.append(batch)
                    else:
                        kept.clear()
                yield batch
            # Reached only when the reader ran to its end without an error.
            if keeping and self.put(key, pa.Table.from_batches(kept, schema=reader.schema)) and on_store:
                on_store()

        return pa.RecordBatchReader.from_batches(reader.schema, batches())
