"""Resolving catalog locations: local paths confined to the data root, S3 from settings."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from pydantic import SecretStr

from govern.config import S3Settings, Settings
from govern.errors import InvalidRequest, StorageError
from govern.storage.location import resolve, s3_filesystem


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


# -- accepted local locations --------------------------------------------------------------


@pytest.mark.parametrize(
    "location, expected",
    [
        ("patients.parquet", "patients.parquet"),  # plain, relative to the root
        ("lake/encounters", "lake/encounters"),  # a folder
        ("lake/../patients.parquet", "patients.parquet"),  # ".." that stays inside
        ("./lake/./encounters/", "lake/encounters"),
        ("not-yet-there.parquet", "not-yet-there.parquet"),  # existence is checked on open
    ],
)
def test_plain_paths_resolve_under_the_data_root(
    settings: Settings, data_root: Path, location: str, expected: str
) -> None:
    _touch(data_root / "patients.parquet")
    _touch(data_root / "lake" / "encounters" / "part-0.parquet")
    fs, path = resolve(location, settings)
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == (Path(os.path.realpath(data_root)) / expected).as_posix()


def test_absolute_path_and_file_uri_inside_the_root_are_accepted(
    settings: Settings, data_root: Path
) -> None:
    target = _touch(data_root / "p q.parquet")
    real = os.path.realpath(target)
    assert resolve(str(target), settings)[1] == real
    assert resolve(target.as_uri(), settings)[1] == real  # percent-encoded space
    assert resolve("file://localhost" + str(target), settings)[1] == real


def test_symlink_inside_the_root_is_followed(settings: Settings, data_root: Path) -> None:
    target = _touch(data_root / "real" / "p.parquet")
    (data_root / "alias.parquet").symlink_to(target)
    assert resolve("alias.parquet", settings)[1] == os.path.realpath(target)


def test_data_root_may_itself_be_a_symlink(tmp_path: Path) -> None:
    real_root = tmp_path / "real-root"
    _touch(real_root / "p.parquet")
    (tmp_path / "link-root").symlink_to(real_root)
    _, path = resolve("p.parquet", Settings(data_root=tmp_path / "link-root"))
    assert path == os.path.realpath(real_root / "p.parquet")


# -- refused local locations (fail closed) -------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    return _touch(tmp_path / "secret" / "passwd.parquet")


@pytest.mark.parametrize(
    "location",
    [
        "../secret/passwd.parquet",  # dot-dot escape
        "lake/../../secret/passwd.parquet",  # escape through an inner folder
        "..",  # the root's parent itself
        "/etc/passwd",  # absolute path elsewhere
        "file:///etc/passwd",  # file URI elsewhere
        "file:///%2e%2e/etc/passwd",  # encoded dot-dot
        "file://otherhost/etc/passwd",  # a remote host
        "file:relative/path",  # not an absolute URI (no "://"): taken as a plain path below
    ],
)
def test_escapes_are_refused(settings: Settings, outside: Path, location: str) -> None:
    if location == "file:relative/path":
        # "file:relative" is a legal folder name inside the root; it must stay inside.
        assert resolve(location, settings)[1].startswith(os.path.realpath(settings.data_root))
        return
    with pytest.raises(InvalidRequest) as err:
        resolve(location, settings)
    assert str(settings.data_root) not in err.value.detail
    assert str(outside) not in err.value.detail


def test_absolute_path_to_a_file_outside_is_refused(settings: Settings, outside: Path) -> None:
    with pytest.raises(InvalidRequest, match="outside the data root"):
        resolve(str(outside), settings)
    with pytest.raises(InvalidRequest, match="outside the data root"):
        resolve(outside.as_uri(), settings)


def test_symlink_leading_outside_is_refused(
    settings: Settings, data_root: Path, outside: Path
) -> None:
    (data_root / "innocent.parquet").symlink_to(outside)
    (data_root / "dir-link").symlink_to(outside.parent, target_is_directory=True)
    for location in ("innocent.parquet", "dir-link/passwd.parquet", "dir-link"):
        with pytest.raises(InvalidRequest) as err:
            resolve(location, settings)
        assert err.value.detail == f"dataset location {location!r} lies outside the data root"


# -- a remembered resolution never outlives what it checked (location.real_path) ----------------


def _relink(link: Path, target: Path) -> None:
    """Re-point ``link`` in one step (rename over it), as an attacker with the folder would."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target, target_is_directory=target.is_dir())
    os.replace(tmp, link)


def test_a_link_re_pointed_outside_after_a_read_is_refused(
    settings: Settings, data_root: Path, outside: Path
) -> None:
    inside = _touch(data_root / "real" / "p.parquet")
    (data_root / "alias.parquet").symlink_to(inside)
    (data_root / "lake").symlink_to(inside.parent, target_is_directory=True)
    for _ in range(2):  # resolved and remembered
        assert resolve("alias.parquet", settings)[1] == os.path.realpath(inside)
        assert resolve("lake/p.parquet", settings)[1] == os.path.realpath(inside)
    _relink(data_root / "alias.parquet", outside)
    _relink(data_root / "lake", outside.parent)
    for location in ("alias.parquet", "lake/passwd.parquet", "lake"):
        with pytest.raises(InvalidRequest, match="outside the data root"):
            resolve(location, settings)


def test_a_folder_swapped_under_a_remembered_path_is_resolved_again(
    settings: Settings, data_root: Path, tmp_path: Path
) -> None:
    """The remembered real path is checked too: here the path still reaches the same file (its
    folder was renamed and the link followed it), but the remembered real path now leads to
    another file, outside, through a link planted where the folder was."""
    inside = _touch(data_root / "c" / "b.parquet")
    (data_root / "a").symlink_to(data_root / "c", target_is_directory=True)
    assert resolve("a/b.parquet", settings)[1] == os.path.realpath(inside)
    os.rename(data_root / "c", data_root / "c-old")
    _relink(data_root / "a", data_root / "c-old")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _touch(elsewhere / "b.parquet")
    (data_root / "c").symlink_to(elsewhere, target_is_directory=True)
    assert resolve("a/b.parquet", settings)[1] == os.path.realpath(data_root / "c-old" / "b.parquet")


def test_a_file_replaced_in_place_resolves_to_the_new_one(settings: Settings, data_root: Path) -> None:
    first = _touch(data_root / "one" / "p.parquet")
    second = _touch(data_root / "two" / "p.parquet")
    (data_root / "p.parquet").symlink_to(first)
    assert resolve("p.parquet", settings)[1] == os.path.realpath(first)
    _relink(data_root / "p.parquet", second)
    assert resolve("p.parquet", settings)[1] == os.path.realpath(second)


def test_sibling_with_common_prefix_is_outside(tmp_path: Path) -> None:
    """``/x/data-evil`` starts with the text ``/x/data`` but is not inside it."""
    _touch(tmp_path / "data-evil" / "p.parquet")
    settings = Settings(data_root=tmp_path / "data")
    (tmp_path / "data").mkdir()
    with pytest.raises(InvalidRequest):
        resolve(str(tmp_path / "data-evil" / "p.parquet"), settings)


@pytest.mark.parametrize(
    "location, message",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a\x00b", "NUL"),
        ("http://example.com/p.parquet", "unsupported scheme"),
        ("hdfs://nn/p.parquet", "unsupported scheme"),
        ("s3://", "no valid bucket"),
        ("s3:///key.parquet", "no valid bucket"),
        ("s3://user:pw@bucket/key", "no valid bucket"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/k.parquet?endpoint_override=evil.example:80", "query"),
        ("file:///tmp/x#frag", "query or fragment"),
    ],
)
def test_malformed_locations(settings: Settings, location: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        resolve(location, settings)


# -- S3 ------------------------------------------------------------------------------------


def _s3_settings(**overrides: object) -> Settings:
    s3 = S3Settings(
        endpoint_override="127.0.0.1:9",
        scheme="http",
        region="eu-central-1",
        access_key=SecretStr("AKIDEXAMPLE"),
        secret_key=SecretStr("very-secret-value"),
        connect_timeout=1.5,
        request_timeout=2.5,
        retries=4,
    )
    return Settings(s3=s3.model_copy(update=overrides))


def test_s3_location_builds_filesystem_from_settings() -> None:
    settings = _s3_settings()
    fs, path = resolve("s3://bucket/lake/patients.parquet", settings)
    assert isinstance(fs, pafs.S3FileSystem)
    assert path == "bucket/lake/patients.parquet"
    assert fs.region == "eu-central-1"
    # The constructor arguments, as pyarrow would pickle them.
    kwargs = fs.__reduce__()[1][0]
    assert kwargs["endpoint_override"] == "127.0.0.1:9"
    assert kwargs["scheme"] == "http"
    assert kwargs["connect_timeout"] == 1.5
    assert kwargs["request_timeout"] == 2.5
    assert resolve("s3://bucket/folder/", settings)[1] == "bucket/folder"
    assert resolve("S3://bucket", settings)[1] == "bucket"


def test_s3_filesystem_is_cached_per_settings_object() -> None:
    settings = _s3_settings()
    first = resolve("s3://b/k", settings)[0]
    assert resolve("s3://b/other", settings)[0] is first
    assert s3_filesystem(_s3_settings()) is not first  # another settings object
    settings.s3 = settings.s3.model_copy(update={"region": "us-west-2"})
    changed = s3_filesystem(settings)  # mutated settings never reuse a stale client
    assert changed is not first
    assert changed.region == "us-west-2"


def test_half_credentials_are_refused_without_echoing_them() -> None:
    settings = _s3_settings(secret_key=None)
    with pytest.raises(StorageError) as err:
        resolve("s3://b/k", settings)
    assert "AKIDEXAMPLE" not in str(err.value)
    assert "very-secret-value" not in repr(settings)


def test_cache_entry_dies_with_its_settings() -> None:
    import gc

    from govern.storage import location

    settings = _s3_settings()
    s3_filesystem(settings)
    ident = id(settings)
    assert ident in location._s3_cache
    del settings
    gc.collect()
    assert ident not in location._s3_cache
