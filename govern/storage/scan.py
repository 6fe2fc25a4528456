"""Open datasets and stream their rows with projection and predicate pushdown.

This is the only place the gateway touches data files. Three promises hold here:

- **Only what the plan needs is read.** ``scan`` projects the plan's columns and hands the
  filter to the Arrow scanner, which prunes Parquet row groups (and hive partitions) by
  their statistics before decoding anything.
- **Memory is bounded.** Batches are pulled one at a time with a read-ahead bounded in bytes
  (:func:`readahead`), so peak memory depends on ``batch_size`` and that budget, not on the
  dataset's size. The scanner
  runs with ``use_threads=False``: with threads, Arrow's Parquet scan keeps decoding ahead of
  a slower consumer whatever ``batch_readahead``/``fragment_readahead`` say (apache/arrow#39808;
  measured: Arrow's allocations grew to 1 GiB and the gateway's RSS to 1.8 GiB under a masked
  read, with read-ahead 2/1 and even 0/0). Masking, not decoding, is the gateway's bottleneck,
  and the mask threads still run in parallel with the decoding thread, so nothing measurable
  is lost (docs/performance.md#gateway).
- **Failures are loud.** Every pyarrow/OS error becomes a :class:`StorageError` whose message
  quotes the location as the catalog states it (no server paths, no credentials). A failure
  in the middle of a stream is raised by the reader; and because a truncated CSV file simply
  looks shorter, the reader re-checks every file's size and mtime at the end of the stream
  and raises if any changed, so a short read is never mistaken for the whole dataset.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from govern.config import Settings
from govern.errors import GovernError, InvalidRequest, StorageError
from govern.storage.hot import HotTable
from govern.storage.location import is_within, local_root, resolve

__all__ = ["FORMATS", "check_reachable", "fingerprint", "open_dataset", "physical_schema", "readahead", "row_count", "scan", "use_jemalloc"]

log = logging.getLogger(__name__)

FORMATS = ("parquet", "csv")

# No scanner threads, one file ahead (module docstring). Batch read-ahead is a byte budget,
# not a count (see readahead()): a wide masked read keeps one batch ahead — Arrow's allocations
# peak at ~50 MiB with batch_size 32768; 16 batches ahead cost another ~120 MiB for no speed,
# since masking is the bottleneck there, and a 16 MiB budget (4 batches) raised the gateway's
# peak RSS from ~370 to ~450 MiB — while a narrow read (two columns for an SQL aggregate)
# decodes 10 to 32 batches ahead of its consumer and scans ~30% faster.
USE_THREADS = False
BATCH_READAHEAD = 1  # the floor, and what CSV (no metadata to size batches by) gets
MAX_BATCH_READAHEAD = 32
READAHEAD_BYTES = 8 * 2**20  # estimated decoded bytes a scan may hold ahead of its consumer
FRAGMENT_READAHEAD = 1


def open_dataset(location: str, fmt: str, settings: Settings) -> ds.Dataset:
    """Open a file or a folder/prefix of files as one dataset.

    A folder is listed recursively; names starting with ``.`` or ``_`` (``_SUCCESS``,
    temporary files) are skipped. Hive partitioning (``region=EU/``) is used only when the
    folder is laid out that way. Local files found in a folder are re-checked against the
    data root, so a symlink planted inside the folder cannot lead outside it. The schema is
    taken from the first file (pyarrow's default); extra columns in later files are ignored,
    which withholds them, the fail-closed direction.
    """
    file_format = _file_format(fmt)
    fs, path = resolve(location, settings)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"dataset location {location!r} was not found", location=location)
        if info.type == pafs.FileType.File:
            return ds.dataset(path, filesystem=fs, format=file_format)
        if info.type != pafs.FileType.Directory:
            raise StorageError(
                f"dataset location {location!r} is not a file or folder", location=location
            )
        files = _list_files(fs, path)
        if not files:
            raise StorageError(
                f"dataset location {location!r} holds no data files", location=location
            )
        if isinstance(fs, pafs.LocalFileSystem):
            root = local_root(settings)
            if not all(is_within(f, root) for f in files):
                raise InvalidRequest(
                    f"dataset location {location!r} contains a link that leads outside the data root",
                    location=location,
                )
        hive = any(
            "=" in part for f in files for part in PurePosixPath(f).relative_to(path).parts[:-1]
        )
        return ds.dataset(
            files,
            filesystem=fs,
            format=file_format,
            partitioning="hive" if hive else None,
            partition_base_dir=path,
        )
    except GovernError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise _storage_error(exc, location, "open") from exc


def physical_schema(dataset: ds.Dataset) -> pa.Schema:
    """The schema as stored (including hive partition fields), before any policy applies."""
    return dataset.schema


def use_jemalloc() -> str:
    """Make jemalloc Arrow's allocator for this (long-running server) process, unless the
    ``ARROW_DEFAULT_MEMORY_POOL`` environment variable already chose one; returns the
    allocator in use. Measured on a masked gateway read, the server's peak RSS was ~420 MiB
    with jemalloc, ~465 with the system allocator and ~500 with mimalloc (pyarrow's default,
    which keeps freed pages per thread), at the same CPU cost; jemalloc with a decay of 0
    saved another ~20 MiB for ~30% more CPU, so its default decay is kept."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return pa.default_memory_pool().backend_name
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow build without jemalloc (e.g. Windows wheels)
        pass
    return pa.default_memory_pool().backend_name


def readahead(dataset: ds.Dataset, columns: list[str], batch_size: int) -> int:
    """How many batches a scan of ``columns`` may decode ahead of its consumer: as many as fit
    in ``READAHEAD_BYTES`` (between ``BATCH_READAHEAD`` and ``MAX_BATCH_READAHEAD``).

    A batch's size is estimated from the first Parquet file's footer (read once per opened
    dataset): each column's uncompressed bytes per row, at least 8, plus 16 for a string column
    stored with a dictionary page but read as plain strings (its decoded values are not in the
    footer). CSV, or a footer that cannot be read, gets ``BATCH_READAHEAD``."""
    footer = _footer_sizes(dataset)
    if not columns or footer is None:
        return BATCH_READAHEAD
    dictionaries = {f.name for f in dataset.schema if pa.types.is_dictionary(f.type)}
    per_row = 0.0
    for name in set(columns):  # a partition column, or one the file lacks, counts as 8 bytes
        row, has_dictionary = footer.get(name, (0.0, False))
        if has_dictionary and name not in dictionaries:
            row += 16
        per_row += max(row, 8.0)
    batches = int(READAHEAD_BYTES // (per_row * max(1, batch_size)))
    return max(BATCH_READAHEAD, min(MAX_BATCH_READAHEAD, batches))


_FOOTERS: weakref.WeakKeyDictionary[ds.Dataset, dict[str, tuple[float, bool]] | None] = weakref.WeakKeyDictionary()
_FOOTERS_LOCK = threading.Lock()


def _footer_sizes(dataset: ds.Dataset) -> dict[str, tuple[float, bool]] | None:
    """Per top-level column of the first Parquet file: (uncompressed bytes per row, whether
    every row group has a dictionary page); ``None`` for CSV or an unreadable footer."""
    if dataset in _FOOTERS:
        return _FOOTERS[dataset]
    found: dict[str, tuple[float, bool]] | None = None
    if isinstance(getattr(dataset, "format", None), ds.ParquetFileFormat):
        try:
            fragment = next(iter(dataset.get_fragments()), None)
            metadata = fragment.metadata if fragment is not None else None
        except (OSError, pa.ArrowException):
            metadata = None
        if metadata is not None and metadata.num_rows > 0:
            sizes: dict[str, int] = {}
            dictionary: dict[str, bool] = {}
            for g in range(metadata.num_row_groups):
                group = metadata.row_group(g)
                for i in range(group.num_columns):
                    column = group.column(i)
                    name = column.path_in_schema.split(".")[0]
                    sizes[name] = sizes.get(name, 0) + column.total_uncompressed_size
                    dictionary[name] = dictionary.get(name, True) and column.has_dictionary_page
            found = {name: (size / metadata.num_rows, dictionary[name]) for name, size in sizes.items()}
    with _FOOTERS_LOCK:
        _FOOTERS[dataset] = found
    return found


def row_count(dataset: ds.Dataset, *, location: str | None = None) -> int | None:
    """How many rows the dataset holds, when the files' metadata says so without a scan
    (Parquet footers, read once per opened dataset); ``None`` for CSV, which would be read
    whole."""
    if not isinstance(getattr(dataset, "format", None), ds.ParquetFileFormat):
        return None
    try:
        return dataset.count_rows()
    except (OSError, pa.ArrowException) as exc:
        raise _storage_error(exc, location, "read") from exc


def scan(
    dataset: ds.Dataset,
    columns: list[str],
    filter: pc.Expression | None,
    batch_size: int,
    *,
    location: str | None = None,
    table: HotTable | None = None,
) -> pa.RecordBatchReader:
    """Stream ``columns`` of the rows matching ``filter``, one batch at a time.

    The scanner is built eagerly, so a bad column or filter fails here, before any byte is
    sent to a client. ``location`` is only used in error messages (give the catalog's text).
    ``table``: the dataset's rows already decoded (:class:`govern.storage.hot.HotTables`), to
    filter and project instead of scanning the files.
    """
    if batch_size <= 0:
        raise InvalidRequest("batch_size must be positive")
    names = set(dataset.schema.names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise StorageError(
            f"{_subject(location)} has no column(s) {', '.join(map(repr, missing))}",
            **_extra(location),
        )
    if table is not None:
        return _from_table(table, columns, filter, batch_size, location)
    try:
        scanner = dataset.scanner(
            columns=list(columns),
            filter=filter,
            batch_size=batch_size,
            batch_readahead=readahead(dataset, columns, batch_size),
            fragment_readahead=FRAGMENT_READAHEAD,
            fragment_scan_options=_scan_options(dataset),
            use_threads=USE_THREADS,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise _unbound(exc, location) from exc
    try:
        before = _snapshot(dataset)
    except (OSError, pa.ArrowException) as exc:
        raise _storage_error(exc, location, "scan") from exc
    schema = scanner.projected_schema
    return pa.RecordBatchReader.from_batches(schema, _stream(scanner, dataset, before, location))


def _from_table(table: HotTable, columns: list[str], filter: pc.Expression | None, batch_size: int,
                location: str | None) -> pa.RecordBatchReader:
    """:func:`scan` over rows already decoded: the same filter (Arrow's, as the scanner's, its
    selection remembered per filter) and projection, and the same refusal when the filter does
    not bind to the stored types."""
    try:
        rows = table.rows(filter, list(columns))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise _unbound(exc, location) from exc
    return pa.RecordBatchReader.from_batches(rows.schema, iter(rows.to_batches(max_chunksize=batch_size)))


def _unbound(exc: Exception, location: str | None) -> StorageError:
    """Binding the filter to the stored types failed: the data does not have the types the
    catalog promised. No I/O has happened yet. (The message may quote filter literals, i.e.
    data, so only the exception's type is logged.)"""
    log.warning("scan of %r refused: %s", location, type(exc).__name__)
    return StorageError(
        f"the filter cannot be applied to {_subject(location)}: its stored column types differ",
        **_extra(location),
    )


def check_reachable(location: str, fmt: str, settings: Settings, timeout: float) -> None:
    """Readiness probe: open the dataset (listing plus one footer or header) or raise
    :class:`StorageError` within ``timeout`` seconds.

    The probe runs in a daemon thread because the S3 client's own timeouts do not bound
    every path (its read timeout is ignored on Linux); a hung probe thread is abandoned,
    never waited for, so ``/readyz`` always answers.
    """
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            open_dataset(location, fmt, settings)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=probe, name="govern-storage-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive() or not outcome:
        raise StorageError(
            f"dataset location {location!r} did not answer within {timeout:g}s", location=location
        )
    exc = outcome[0]
    if exc is None:
        return
    if isinstance(exc, GovernError):
        raise exc
    raise StorageError(f"dataset location {location!r} is not readable", location=location) from exc


# -- internals ---------------------------------------------------------------------------


def _file_format(fmt: str) -> ds.FileFormat:
    if fmt == "parquet":
        return ds.ParquetFileFormat()
    if fmt == "csv":
        return ds.CsvFileFormat()
    raise InvalidRequest(f"unsupported dataset format {fmt!r} (supported: {', '.join(FORMATS)})")


def _scan_options(dataset: ds.Dataset) -> ds.FragmentScanOptions | None:
    """Parquet without pre-buffering. Pre-buffering keeps every byte range it read until the
    whole file is done, so peak memory grows with the file (measured: 33 MB at 1.6M rows,
    116 MB at 6.4M, versus ~5 MB flat without it). Bounded memory wins over fewer, larger
    S3 requests."""
    if isinstance(getattr(dataset, "format", None), ds.ParquetFileFormat):
        return ds.ParquetFragmentScanOptions(pre_buffer=False)
    return None


def _list_files(fs: pafs.FileSystem, base: str) -> list[str]:
    selector = pafs.FileSelector(base, recursive=True)
    files = []
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.File:
            continue
        rel = PurePosixPath(info.path).relative_to(base).parts
        if any(part.startswith((".", "_")) for part in rel):
            continue
        files.append(info.path)
    return sorted(files)


def fingerprint(location: str, settings: Settings) -> tuple[tuple[str, int | None, object], ...]:
    """What the location holds now: (path, size, mtime) of each data file, as
    :func:`open_dataset` would list them — one stat for a file, one listing for a folder.
    An opened dataset is only valid while this stays the same: pyarrow keeps each Parquet
    file's footer once read, so a file rewritten in place would otherwise be read with the
    old footer (and fail), and files added to a folder would never be seen."""
    fs, path = resolve(location, settings)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            selector = pafs.FileSelector(path, recursive=True)
            infos = [i for i in fs.get_file_info(selector) if i.type == pafs.FileType.File
                     and not any(part.startswith((".", "_")) for part in PurePosixPath(i.path).relative_to(path).parts)]
        else:
            infos = [info]
    except (OSError, pa.ArrowException) as exc:
        raise _storage_error(exc, location, "open") from exc
    return tuple(sorted((i.path, i.size, i.mtime_ns) for i in infos))


def _snapshot(dataset: ds.Dataset) -> list[tuple[str, int | None, object]] | None:
    """Size and mtime of every file, to detect a file changed under a running scan."""
    if not isinstance(dataset, ds.FileSystemDataset):
        return None
    infos = dataset.filesystem.get_file_info(dataset.files)
    return [(i.path, i.size, i.mtime_ns) for i in infos]


def _stream(
    scanner: ds.Scanner,
    dataset: ds.Dataset,
    before: list[tuple[str, int | None, object]] | None,
    location: str | None,
) -> Iterator[pa.RecordBatch]:
    try:
        reader = scanner.to_reader()
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                yield batch
        finally:
            reader.close()
        if before is not None and _snapshot(dataset) != before:
            raise StorageError(
                f"{_subject(location)} changed while it was being read; the read is incomplete",
                **_extra(location),
            )
    except (OSError, pa.ArrowException) as exc:
        raise _storage_error(exc, location, "read") from exc


def _subject(location: str | None) -> str:
    return f"dataset location {location!r}" if location else "the dataset"


def _extra(location: str | None) -> dict[str, str]:
    return {"location": location} if location else {}


_NOT_FOUND = (
    "NoSuchBucket",
    "NO_SUCH_BUCKET",
    "NoSuchKey",
    "RESOURCE_NOT_FOUND",
    "Path does not exist",
)
_DENIED = (
    "ACCESS_DENIED",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "response code: 403",
)
_UNREACHABLE = ("NETWORK_CONNECTION", "curlCode", "Couldn't connect", "timed out", "Timeout")
_CORRUPT = ("thrift", "magic bytes", "File too short", "corrupt", "Unexpected end of stream")


def _storage_error(exc: BaseException, location: str | None, action: str) -> StorageError:
    """A safe StorageError for a pyarrow/OS error. The raw message (which may hold server
    paths) goes to the server log only; Arrow's parse and conversion errors may quote rows,
    so for those not even the log gets the message."""
    text = str(exc)
    if isinstance(exc, OSError):
        log.warning("storage %s of %r failed: %s: %s", action, location, type(exc).__name__, text)
    else:
        log.warning("storage %s of %r failed: %s", action, location, type(exc).__name__)
    if isinstance(exc, FileNotFoundError) or any(s in text for s in _NOT_FOUND):
        why = "was not found"
    elif isinstance(exc, PermissionError) or any(s in text for s in _DENIED):
        why = "could not be read: access denied"
    elif any(s in text for s in _UNREACHABLE):
        why = "is unreachable"
    elif (isinstance(exc, pa.ArrowException) and not isinstance(exc, OSError)) or any(
        s in text for s in _CORRUPT
    ):
        why = "could not be read: a file is invalid, truncated, corrupt or of another format"
    else:
        why = "could not be read (I/O error)"
    return StorageError(f"{_subject(location)} {why}", **_extra(location))
