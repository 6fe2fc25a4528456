"""The store of masked materializations: Parquet files of what one access plan delivers from one
version of the data.

Why: pipelines read the same dataset every epoch, and every read re-masked every row (the masks
cost more than decoding). A materialization is the masked stream written once, with only the
plan's permitted columns physically present and its row filters applied, so a repeated read — an
HTTP ``/rows`` read, a Delta Sharing file, a Spark fragment — decodes Parquet and masks nothing.

Contract:

- **Keyed by (plan hash, data version)** (:attr:`AccessPlan.hash`,
  :func:`govern.storage.version.data_version`). A policy change makes a new plan hash, a file
  added, removed or rewritten a new data version: the old entry is never served again (it ages
  out), so invalidation needs no bookkeeping.
- **Bounded**: after every write, the least recently used entries are deleted until the store
  holds at most ``max_bytes`` (the entry just written is kept even when it alone is larger, and
  goes at the next write). Use is tracked in this process and, on local disk, by the file's
  modification time (touched on every hit), so a restarted gateway keeps the order.
- **Where**: a folder (``state_dir/materialized`` by default: 0700, files 0600) or an ``s3://``
  prefix reached with the gateway's S3 settings. It must be private to the gateway: nothing but
  govern serves these files (:class:`MaterializationStore` refuses a local folder inside the data
  root, where a catalog entry could name it).
- **Atomic**: a local entry is written aside and renamed; an S3 object appears whole when its
  upload completes. A reader never sees half a file.

This module is storage only: it knows files and keys, never plans or principals. Building an
entry (deciding, planning, masking) is :mod:`govern.deliver.materialize`.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from govern.config import Settings
from govern.errors import InvalidRequest, StorageError
from govern.storage.location import is_within, local_root, s3_filesystem

__all__ = ["Entry", "MaterializationStore", "open_store"]

_NAME = re.compile(r"([0-9a-f]{64})\.([0-9a-f]{16})\.parquet")
ROW_GROUP_ROWS = 131_072  # rows per row group: large enough for fast scans, small enough to stream


@dataclass(frozen=True)
class Entry:
    """One stored materialization."""

    plan_hash: str
    data_version: str
    path: str  # on :attr:`MaterializationStore.filesystem`
    size: int  # bytes
    rows: int
    filesystem: pafs.FileSystem

    @property
    def file_id(self) -> str:
        """Stable while the plan and the data are: it names this file to recipients."""
        return f"{self.plan_hash[:32]}{self.data_version}"

    def open(self) -> pa.NativeFile:
        return self.filesystem.open_input_file(self.path)

    def reader(self, columns: list[str] | None = None, limit: int | None = None,
               batch_size: int = 65_536) -> pa.RecordBatchReader:
        """The stored rows (only ``columns``, in that order; at most ``limit``) as a stream whose
        memory is bounded by one row group."""
        handle = self.open()
        try:
            pf = pq.ParquetFile(handle)
            schema = pf.schema_arrow
            if columns is not None:
                schema = pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
        except BaseException:
            handle.close()
            raise

        def batches() -> Iterator[pa.RecordBatch]:
            left = limit
            try:
                if left == 0:
                    return
                for batch in pf.iter_batches(batch_size=batch_size, columns=columns, use_threads=True):
                    if columns is not None:
                        batch = batch.select(columns)
                    if left is not None:
                        if batch.num_rows >= left:
                            yield batch.slice(0, left)
                            return
                        left -= batch.num_rows
                    yield batch
            finally:
                handle.close()

        return pa.RecordBatchReader.from_batches(schema, batches())

    def schema(self) -> pa.Schema:
        with self.open() as handle:
            return pq.ParquetFile(handle).schema_arrow


def _name(plan_hash: str, data_version: str) -> str:
    name = f"{plan_hash}.{data_version}.parquet"
    if not _NAME.fullmatch(name):
        raise InvalidRequest("a materialization key is a plan hash (64 hex) and a data version (16 hex)")
    return name


class MaterializationStore:
    """Masked Parquet files on ``filesystem`` under ``root``, at most ``max_bytes`` of them."""

    def __init__(self, filesystem: pafs.FileSystem, root: str, max_bytes: int, *, local: bool) -> None:
        self.filesystem = filesystem
        self.root = root.rstrip("/")
        self.max_bytes = max_bytes
        self.local = local
        self._used: dict[str, float] = {}  # name -> last use in this process
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        if local:
            Path(self.root).mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
        else:
            filesystem.create_dir(self.root, recursive=True)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def building(self, plan_hash: str, data_version: str) -> threading.Lock:
        """A lock per key: concurrent first reads of one plan build it once in this process."""
        name = _name(plan_hash, data_version)
        with self._lock:
            return self._building.setdefault(name, threading.Lock())

    def get(self, plan_hash: str, data_version: str) -> Entry | None:
        """The stored entry for this key (and mark it used), or None."""
        name = _name(plan_hash, data_version)
        path = f"{self.root}/{name}"
        try:
            info = self.filesystem.get_file_info(path)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError("the materialization store cannot be listed") from exc
        if info.type != pafs.FileType.File:
            return None
        try:
            with self.filesystem.open_input_file(path) as handle:
                rows = pq.ParquetFile(handle).metadata.num_rows
        except (OSError, pa.ArrowException):
            return None  # deleted by an eviction meanwhile, or damaged: build it again
        self._touch(name, path)
        return Entry(plan_hash, data_version, path, info.size, rows, self.filesystem)

    def put(self, plan_hash: str, data_version: str, reader: pa.RecordBatchReader) -> Entry:
        """Write ``reader`` as the entry for this key (batch by batch: memory stays bounded),
        then evict the least recently used entries beyond ``max_bytes``."""
        name = _name(plan_hash, data_version)
        final = f"{self.root}/{name}"
        target = f"{self.root}/.tmp-{uuid.uuid4().hex}" if self.local else final
        rows = 0
        try:
            with self.filesystem.open_output_stream(target) as sink, \
                    pq.ParquetWriter(sink, reader.schema, compression="zstd", write_statistics=True) as writer:
                pending: list[pa.RecordBatch] = []
                buffered = 0
                for batch in reader:
                    pending.append(batch)
                    buffered += batch.num_rows
                    if buffered >= ROW_GROUP_ROWS:
                        writer.write_table(pa.Table.from_batches(pending, reader.schema), row_group_size=buffered)
                        rows += buffered
                        pending, buffered = [], 0
                if pending or rows == 0:
                    writer.write_table(pa.Table.from_batches(pending, reader.schema),
                                       row_group_size=max(1, buffered))
                    rows += buffered
            if self.local:
                os.chmod(target, 0o600)
                os.replace(target, final)
        except BaseException:
            self.delete(target)
            raise
        size = self.filesystem.get_file_info(final).size
        self._touch(name, final)
        self.evict(keep=name)
        return Entry(plan_hash, data_version, final, size, rows, self.filesystem)

    def entries(self) -> list[tuple[str, int, float]]:
        """(name, size, last use) of every stored entry."""
        try:
            infos = self.filesystem.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        except (OSError, pa.ArrowException) as exc:
            raise StorageError("the materialization store cannot be listed") from exc
        out = []
        for info in infos:
            name = info.base_name
            if info.type != pafs.FileType.File or not _NAME.fullmatch(name):
                continue
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            out.append((name, info.size or 0, max(mtime, self._used.get(name, 0.0))))
        return out

    def evict(self, keep: str | None = None) -> list[str]:
        """Delete the least recently used entries until at most ``max_bytes`` are stored."""
        entries = sorted(self.entries(), key=lambda e: e[2])
        total = sum(size for _, size, _ in entries)
        gone = []
        for name, size, _ in entries:
            if total <= self.max_bytes:
                break
            if name == keep:
                continue
            self.delete(f"{self.root}/{name}")
            with self._lock:
                self._used.pop(name, None)
            total -= size
            gone.append(name)
        return gone

    def _touch(self, name: str, path: str) -> None:
        now = time.time()
        with self._lock:
            self._used[name] = now
        if self.local:
            try:
                os.utime(path, (now, now))
            except OSError:
                pass

    def delete(self, path: str) -> None:
        try:
            self.filesystem.delete_file(path)
        except (OSError, pa.ArrowException):
            pass


def open_store(settings: Settings) -> MaterializationStore:
    """The store ``settings`` name: ``materialize_url`` (``s3://bucket/prefix``) or, by default,
    ``state_dir/materialized``."""
    url = settings.materialize_url
    if url:
        if not url.lower().startswith("s3://"):
            raise InvalidRequest("materialize_url must be an s3:// prefix (local stores live under state_dir)")
        rest = url.split("://", 1)[1].strip("/")
        if not rest or "?" in rest or "#" in rest or any(s in (".", "..") for s in rest.split("/")):
            raise InvalidRequest("materialize_url must name a bucket and an optional prefix")
        return MaterializationStore(s3_filesystem(settings), rest, settings.materialize_max_bytes, local=False)
    root = Path(settings.state_dir).expanduser().resolve() / "materialized"
    if is_within(root, local_root(settings)):
        raise InvalidRequest("the materialization store must not lie inside the data root: a catalog entry "
                             "could name its files")
    return MaterializationStore(pafs.LocalFileSystem(), root.as_posix(), settings.materialize_max_bytes, local=True)
