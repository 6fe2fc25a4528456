"""A dataset's files cut into fragments (file / row-group splits) that readers fetch one by one.

Why: a Spark job (or Ray, Dask) reads a governed dataset in parallel, one task per fragment,
each task fetching its fragment's masked rows from any gateway instance. The split must be the
same on every instance for the same data, so a fragment is named by what storage shows — the
file's path relative to the dataset's folder and a range of Parquet row groups — and is valid
only for the data version it was cut from (:mod:`govern.storage.version`).

A Parquet file is cut at row-group boundaries into runs of about ``target_rows`` rows; other
formats (CSV, JSON lines) are one fragment per file. A masked materialization
(:mod:`govern.storage.materialized`) is cut the same way (:func:`row_group_runs`) and read back
by row group (:func:`row_group_reader`), or sent as it is stored (:func:`stored_span`): the bytes
of its row groups and the file's footer, which a reader decodes itself (docs/api.md#fragments).
"""

from __future__ import annotations

import itertools
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from govern.errors import StorageError

__all__ = ["Fragment", "StoredSpan", "row_group_reader", "row_group_runs", "split", "stored_span", "subset"]


@dataclass(frozen=True)
class Fragment:
    """``file`` (relative to the dataset's folder), row groups ``[start, stop)`` — ``None`` for
    the whole file — and how many stored rows and bytes it holds (before any row filter)."""

    file: str
    row_groups: tuple[int, int] | None
    rows: int
    nbytes: int

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "row_groups": list(self.row_groups) if self.row_groups else None}


def _base(files: list[str]) -> str:
    return posixpath.commonpath(files) if len(files) > 1 else posixpath.dirname(files[0]) if files else ""


def _relative(path: str, base: str) -> str:
    return posixpath.relpath(path, base) if base else path


def row_group_runs(metadata: pq.FileMetaData, file: str, target_rows: int) -> list[Fragment]:
    """One Parquet file's row groups in runs of about ``target_rows`` rows."""
    out: list[Fragment] = []
    start, rows, nbytes = 0, 0, 0
    groups = metadata.num_row_groups
    for i in range(groups):
        rg = metadata.row_group(i)
        rows += rg.num_rows
        nbytes += rg.total_byte_size
        if rows >= max(1, target_rows) or i == groups - 1:
            out.append(Fragment(file, (start, i + 1), rows, nbytes))
            start, rows, nbytes = i + 1, 0, 0
    return out or [Fragment(file, (0, 0), 0, 0)]


@dataclass(frozen=True)
class StoredSpan:
    """Where row groups ``[start, stop)`` of a Parquet file lie: ``body`` — the bytes
    ``[begin, end)`` that hold all their column chunks — and ``footer``, the file's last
    ``size - footer_begin`` bytes (metadata, its length, the magic). With both, a reader decodes
    those row groups as if it had the file, reading nothing else (the Spark source does:
    ``govern_spark.source``)."""

    size: int
    begin: int
    end: int
    footer_begin: int
    rows: int


def stored_span(metadata: pq.FileMetaData, row_groups: tuple[int, int], size: int, tail: bytes) -> StoredSpan | None:
    """The span of row groups ``[start, stop)`` in a file of ``size`` bytes whose last 8 bytes
    are ``tail``; None when their column chunks are not one contiguous run (not so in files
    Arrow writes: then the caller decodes and re-encodes instead)."""
    if len(tail) != 8 or tail[4:] != b"PAR1":
        return None
    footer_begin = size - 8 - int.from_bytes(tail[:4], "little")
    chunks: list[tuple[int, int]] = []
    rows = 0
    for i in range(*row_groups):
        group = metadata.row_group(i)
        rows += group.num_rows
        for c in range(group.num_columns):
            col = group.column(c)
            begin = col.dictionary_page_offset if col.has_dictionary_page and col.dictionary_page_offset else \
                col.data_page_offset
            chunks.append((begin, begin + col.total_compressed_size))
    if not chunks:
        return None
    chunks.sort()
    for (_, end), (begin, _) in itertools.pairwise(chunks):
        if begin != end:
            return None
    begin, end = chunks[0][0], chunks[-1][1]
    if not 4 <= begin <= end <= footer_begin <= size - 8:
        return None
    return StoredSpan(size, begin, end, footer_begin, rows)


def row_group_reader(handle: pa.NativeFile, row_groups: tuple[int, int], columns: list[str],
                     batch_size: int) -> pa.RecordBatchReader:
    """Row groups ``[start, stop)`` of the Parquet file ``handle`` (``columns``, in that order),
    streamed; the handle is closed when the stream ends."""
    try:
        pf = pq.ParquetFile(handle)
        full = pf.schema_arrow
        schema = pa.schema([full.field(c) for c in columns], metadata=full.metadata)
    except BaseException:
        handle.close()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            if row_groups[1] > row_groups[0]:
                for batch in pf.iter_batches(batch_size=batch_size, row_groups=list(range(*row_groups)),
                                             columns=columns, use_threads=True):
                    yield batch.select(columns)
        finally:
            handle.close()

    return pa.RecordBatchReader.from_batches(schema, batches())


def split(dataset: ds.Dataset, target_rows: int, *, location: str = "") -> list[Fragment]:
    """The dataset's fragments, in file order, each of about ``target_rows`` stored rows."""
    if not isinstance(dataset, ds.FileSystemDataset):  # pragma: no cover - every catalog location opens as files
        raise StorageError(f"dataset location {location!r} cannot be split into fragments", location=location)
    target = max(1, int(target_rows))
    out: list[Fragment] = []
    try:
        fragments = list(dataset.get_fragments())
        base = _base([f.path for f in fragments])
        for frag in fragments:
            rel = _relative(frag.path, base)
            if not isinstance(frag, ds.ParquetFileFragment):
                size = dataset.filesystem.get_file_info(frag.path).size or 0
                out.append(Fragment(rel, None, frag.count_rows(), size))
                continue
            out.extend(row_group_runs(frag.metadata, rel, target))
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"dataset location {location!r} cannot be split into fragments",
                           location=location) from exc
    return out


def subset(dataset: ds.Dataset, file: str, row_groups: tuple[int, int] | None, *,
           location: str = "") -> ds.Dataset:
    """The dataset restricted to one fragment (same schema, format and partition values)."""
    if not isinstance(dataset, ds.FileSystemDataset):  # pragma: no cover
        raise StorageError(f"dataset location {location!r} cannot be split into fragments", location=location)
    fragments = list(dataset.get_fragments())
    base = _base([f.path for f in fragments])
    for frag in fragments:
        if _relative(frag.path, base) != file:
            continue
        if row_groups is not None and isinstance(frag, ds.ParquetFileFragment):
            frag = frag.subset(row_group_ids=list(range(*row_groups)))
        return ds.FileSystemDataset([frag], dataset.schema, dataset.format, dataset.filesystem)
    raise StorageError(f"dataset location {location!r} has no file {file!r}", location=location)
