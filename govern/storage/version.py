"""The data version of a dataset: a short digest of its files as storage lists them.

Why one definition: synthetic models, masked materializations, fragment and file tickets and
monitoring profiles are all keyed by "the data as it is now"; they must agree on when it changed.
A file added, removed or rewritten (path within the dataset, size, modification time — for S3 the
object's size and last-modified) makes a new version; moving the data root does not.
"""

from __future__ import annotations

import hashlib
import posixpath

import pyarrow as pa
import pyarrow.dataset as ds

from govern.errors import StorageError

__all__ = ["data_version"]


def data_version(dataset: ds.Dataset, location: str) -> str:
    """A digest of the dataset's files as storage lists them."""
    h = hashlib.sha256()
    if isinstance(dataset, ds.FileSystemDataset):
        files = sorted(dataset.files)
        try:
            infos = dataset.filesystem.get_file_info(files)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"dataset location {location!r} cannot be listed", location=location) from exc
        # Paths relative to the dataset's folder: moving the data root keeps the version.
        base = posixpath.commonpath(files) if len(files) > 1 else posixpath.dirname(files[0]) if files else ""
        for info in infos:
            rel = posixpath.relpath(info.path, base) if base else info.path
            h.update(f"{rel}\0{info.size}\0{info.mtime_ns}\n".encode())
    else:  # pragma: no cover - every catalog location opens as files
        h.update(str(dataset.schema).encode())
    return h.hexdigest()[:16]
