"""Settings come from pydantic-settings sources in a documented order: init arguments (the CLI's
options) over ``GOVERN_*`` environment variables over ``govern.yaml`` over the defaults; nested
fields by ``__``. docs/configuration.md states it and every example there is run here."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

from govern.config import load_settings
from govern.errors import InvalidRequest

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "govern.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_nested_environment_variable_wins_over_the_files_section(tmp_path, monkeypatch) -> None:
    """Issue 13: GOVERN_S3__ENDPOINT_OVERRIDE was ignored when govern.yaml had an s3 section."""
    path = write(tmp_path, """
        s3:
          endpoint_override: minio.internal:9000
          scheme: http
    """)
    monkeypatch.setenv("GOVERN_S3__ENDPOINT_OVERRIDE", "127.0.0.1:9000")
    s = load_settings(path)
    assert s.s3.endpoint_override == "127.0.0.1:9000"
    assert s.s3.scheme == "http"  # the file's other keys of the section stay
    assert s.s3.region == "us-east-1"  # and the defaults under them


def test_precedence_init_over_environment_over_file_over_defaults(tmp_path, monkeypatch) -> None:
    path = write(tmp_path, """
        port: 8100
        host: 0.0.0.0
        batch_size: 1000
        monitor:
          drift_psi: 0.3
    """)
    monkeypatch.setenv("GOVERN_PORT", "8200")
    monkeypatch.setenv("GOVERN_BATCH_SIZE", "2000")
    monkeypatch.setenv("GOVERN_MONITOR__DRIFT_SHARE", "0.75")
    s = load_settings(path, port=8300)
    assert s.port == 8300  # init (CLI) over environment and file
    assert s.batch_size == 2000  # environment over file
    assert s.host == "0.0.0.0"  # file over default
    assert s.monitor.drift_psi == 0.3 and s.monitor.drift_share == 0.75  # nested: merged, key by key
    assert s.max_rows == 10_000_000  # default


def test_without_a_file_the_environment_and_defaults(monkeypatch) -> None:
    monkeypatch.setenv("GOVERN_S3__SCHEME", "http")
    s = load_settings()
    assert s.s3.scheme == "http" and s.port == 8000


def test_relative_paths_and_secret_references_of_the_file(tmp_path, monkeypatch) -> None:
    (tmp_path / "key.txt").write_text("s3cr3t\n")
    monkeypatch.setenv("MY_SECRET", "from-env")
    path = write(tmp_path, """
        state_dir: state
        ssl_certfile: tls/cert.pem
        audit_url: sqlite:///state/audit.db
        s3:
          access_key: {"$env": MY_SECRET}
          secret_key: {"$file": key.txt}
    """)
    s = load_settings(path)
    assert s.state_dir == tmp_path / "state"
    assert s.ssl_certfile == tmp_path / "tls" / "cert.pem"
    assert s.audit_url == f"sqlite:///{(tmp_path / 'state' / 'audit.db').resolve()}"
    assert s.s3.access_key is not None and s.s3.access_key.get_secret_value() == "from-env"
    assert s.s3.secret_key is not None and s.s3.secret_key.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(s)


@pytest.mark.parametrize("text,message", [
    ("port: [", "invalid YAML"),
    ("- a\n- b\n", "must be a mapping"),
    ("s3:\n  secret_key: {$env: GOVERN_TEST_UNSET_VARIABLE}\n", "GOVERN_TEST_UNSET_VARIABLE"),
])
def test_a_bad_file_is_one_clear_error(tmp_path, text, message) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        load_settings(write(tmp_path, text))


def test_a_missing_file_is_an_error(tmp_path) -> None:
    with pytest.raises(InvalidRequest, match="cannot read settings file"):
        load_settings(tmp_path / "nope.yaml")


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_yaml_example_of_the_docs_loads(tmp_path) -> None:
    blocks = _blocks("yaml")
    assert len(blocks) >= 2
    for block in blocks:
        load_settings(write(tmp_path, block))


def test_every_python_example_of_the_docs_runs(tmp_path, monkeypatch) -> None:
    """Each python block runs in a folder holding the yaml block just before it as govern.yaml;
    the environment it sets is put back afterwards."""
    examples = re.findall(r"```yaml\n((?:(?!```).)*)```[^`]*```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert examples
    monkeypatch.chdir(tmp_path)
    for yaml_text, code in examples:
        write(tmp_path, yaml_text)
        saved = dict(os.environ)
        try:
            exec(compile(code, str(DOC), "exec"), {})  # the docs' own example
        finally:
            os.environ.clear()
            os.environ.update(saved)
