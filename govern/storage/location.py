"""Turn a catalog ``location`` into a pyarrow filesystem and a path on it.

Three spellings are accepted:

- a plain path (``patients.parquet``, ``lake/encounters/``), relative to ``settings.data_root``;
- ``file:///abs/path``, which must point inside ``settings.data_root`` too;
- ``s3://bucket/key``, read with :class:`pyarrow.fs.S3FileSystem` built from ``settings.s3``.

Local locations are confined to the data root *after* resolving symlinks, so neither ``..``,
an absolute path elsewhere, nor a symlink planted in the data folder lets a catalog entry
reach other files of the server. Anything unclear is refused (fail closed).

Error messages quote the location exactly as the catalog states it, never the resolved
absolute path (that would leak server layout over HTTP) and never credentials.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pyarrow.fs as pafs

from govern.config import S3Settings, Settings
from govern.errors import InvalidRequest, StorageError

__all__ = ["is_within", "local_root", "real_path", "resolve", "s3_filesystem"]

_SCHEMES = ("s3", "file")

# Filesystems are cached per settings object: the S3 client holds connection pools and
# credentials, and building one per request costs a TLS handshake. The cache is weak so it
# never keeps a discarded Settings (or its secrets) alive; the S3 options are part of the
# entry so a mutated settings object never reuses a filesystem built from old options.
# Settings is unhashable (a mutable pydantic model), so entries are keyed by id() and guarded
# by a weak reference that both detects id reuse and drops the entry when settings die.
_cache_lock = threading.RLock()  # re-entrant: a GC callback may fire while held
_s3_cache: dict[int, tuple[weakref.ref[Settings], tuple[object, ...], pafs.S3FileSystem]] = {}
_LOCAL = pafs.LocalFileSystem()


def resolve(location: str, settings: Settings) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path)`` for a catalog location, refusing anything outside the
    data root. Raises :class:`InvalidRequest` for a malformed or escaping location."""
    if not isinstance(location, str) or not location.strip():
        raise InvalidRequest("dataset location is empty")
    if "\x00" in location:
        raise InvalidRequest("dataset location contains a NUL character")
    if "://" in location:
        scheme = location.split("://", 1)[0].lower()
        if scheme == "s3":
            return s3_filesystem(settings), _s3_path(location)
        if scheme == "file":
            return _LOCAL, _local_path(_file_uri_path(location), location, settings)
        raise InvalidRequest(
            f"dataset location {location!r} uses an unsupported scheme "
            f"(supported: plain paths under the data root, {', '.join(s + '://' for s in _SCHEMES)})"
        )
    return _LOCAL, _local_path(location, location, settings)


def local_root(settings: Settings) -> Path:
    """The data root with symlinks resolved; every local path must lie under it."""
    return Path(real_path(Path(settings.data_root).expanduser()))


# realpath() walks every component of a path with one lstat each, in Python; every read asks
# for its location several times (plan, data version, scan). The answer is remembered with the
# (device, inode) it led to, and used again only while both the path and the remembered real
# path still lead to that inode (two os.stat calls, which follow links): anything else — a link
# re-pointed, a folder swapped or renamed, the file replaced — resolves afresh. Checking the
# real path too matters: a link re-pointed *inside* the remembered real path would otherwise
# lead the open elsewhere while the path itself still reached the old file. A path that does
# not exist is never remembered. (Between this check and the open, a link can still change, as
# it could between realpath and the open before: the same window, no wider.)
_REAL: dict[str, tuple[str, int, int]] = {}
_REAL_MAX = 4096


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def real_path(path: str | Path) -> str:
    """``os.path.realpath(path)``, remembered while ``path`` still leads to the same inode."""
    key = os.fspath(path)
    try:
        st = os.stat(key)
    except OSError:
        return os.path.realpath(key)
    found = _REAL.get(key)
    if found is not None and (found[1], found[2]) == (st.st_dev, st.st_ino) == _inode(found[0]):
        return found[0]
    real = os.path.realpath(key)
    if _inode(real) == (st.st_dev, st.st_ino):  # nothing moved in between
        if len(_REAL) >= _REAL_MAX:
            _REAL.clear()
        _REAL[key] = (real, st.st_dev, st.st_ino)
    return real


def is_within(path: str | Path, root: Path) -> bool:
    """True if ``path`` (symlinks resolved) is ``root`` or lies below it."""
    real = Path(real_path(path))
    return real == root or root in real.parents


def _local_path(raw: str, stated: str, settings: Settings) -> str:
    root = local_root(settings)
    candidate = Path(raw)  # "~" is taken literally: a catalog entry never names a home folder
    if not candidate.is_absolute():
        candidate = root / candidate
    # realpath follows every symlink (also in a not-yet-existing tail) and folds "..", so the
    # containment check below sees where the OS would really go.
    real = Path(real_path(candidate))
    if not (real == root or root in real.parents):
        raise InvalidRequest(f"dataset location {stated!r} lies outside the data root")
    return real.as_posix()


def _file_uri_path(location: str) -> str:
    parts = urlsplit(location)
    if parts.netloc not in ("", "localhost"):
        raise InvalidRequest(f"dataset location {location!r} names a remote host in a file:// URI")
    if parts.query or parts.fragment:
        raise InvalidRequest(f"dataset location {location!r} has a query or fragment")
    path = unquote(parts.path)
    if "\x00" in path or not path.startswith("/"):
        raise InvalidRequest(f"dataset location {location!r} must be an absolute file:// URI")
    return path


def _s3_path(location: str) -> str:
    rest = location.split("://", 1)[1]
    if "?" in rest or "#" in rest:
        # pyarrow's from_uri would honour ?endpoint_override=...; never let a catalog entry
        # redirect reads (or credentials) to another endpoint.
        raise InvalidRequest(f"dataset location {location!r} has a query or fragment")
    bucket, _, key = rest.partition("/")
    if not bucket or "@" in bucket or ":" in bucket:
        raise InvalidRequest(f"dataset location {location!r} has no valid bucket")
    segments = [s for s in key.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise InvalidRequest(f"dataset location {location!r} contains '.' or '..' segments")
    return "/".join([bucket, *segments])


def _s3_key(s3: S3Settings) -> tuple[object, ...]:
    return (
        s3.endpoint_override,
        s3.scheme,
        s3.region,
        s3.access_key.get_secret_value() if s3.access_key else None,
        s3.secret_key.get_secret_value() if s3.secret_key else None,
        s3.anonymous,
        s3.connect_timeout,
        s3.request_timeout,
        s3.retries,
    )


def s3_filesystem(settings: Settings) -> pafs.S3FileSystem:
    """The (cached) S3 filesystem for these settings.

    Endpoint, scheme and region are always passed explicitly: pyarrow ignores
    ``AWS_ENDPOINT_URL``, and an implicit region lookup can hang on instance metadata.
    ``settings.s3.retries`` is the AWS "max attempts" (first try included, at least 1).
    """
    key = _s3_key(settings.s3)
    ident = id(settings)
    with _cache_lock:
        hit = _s3_cache.get(ident)
        if hit is not None and hit[0]() is settings and hit[1] == key:
            return hit[2]
        fs = _build_s3(settings.s3)
        ref = weakref.ref(settings, functools.partial(_forget, ident))
        _s3_cache[ident] = (ref, key, fs)
        return fs


def _forget(ident: int, ref: weakref.ref[Settings]) -> None:
    with _cache_lock:
        hit = _s3_cache.get(ident)
        if hit is not None and hit[0] is ref:
            del _s3_cache[ident]


def _build_s3(s3: S3Settings) -> pafs.S3FileSystem:
    access = s3.access_key.get_secret_value() if s3.access_key else None
    secret = s3.secret_key.get_secret_value() if s3.secret_key else None
    if (access is None) != (secret is None):
        raise StorageError("S3 settings give only one of access_key and secret_key")
    try:
        return pafs.S3FileSystem(
            access_key=access,
            secret_key=secret,
            anonymous=s3.anonymous,
            region=s3.region,
            scheme=s3.scheme,
            endpoint_override=s3.endpoint_override,
            connect_timeout=s3.connect_timeout,
            request_timeout=s3.request_timeout,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=max(1, s3.retries)),
        )
    except (OSError, ValueError, TypeError) as exc:
        # The message of a constructor error may echo its arguments; never pass it on.
        raise StorageError(f"S3 settings are unusable ({type(exc).__name__})") from None
