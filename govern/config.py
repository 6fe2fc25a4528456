"""Settings: ``govern.yaml`` plus ``GOVERN_*`` environment variables (environment wins), read
through pydantic-settings' own sources (:func:`load_settings` says the precedence).

Settings are built explicitly (``load_settings``) and passed down; nothing is configured at
import time. Secrets are ``SecretStr`` so they never appear in a repr or a log line, and in
``govern.yaml`` a secret may be given as ``{"$env": NAME}`` or ``{"$file": PATH}`` instead of
inline text.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from govern.errors import InvalidRequest
from govern.identity.oidc_settings import OidcSettings


class S3Settings(BaseModel):
    """Where ``s3://`` locations resolve. Pass endpoint/scheme explicitly: pyarrow ignores
    ``AWS_ENDPOINT_URL``."""

    endpoint_override: str | None = None  # "127.0.0.1:9000"
    scheme: str = "https"
    region: str = "us-east-1"
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    anonymous: bool = False
    connect_timeout: float = 5.0
    request_timeout: float = 10.0
    retries: int = 1


class MonitorSettings(BaseModel):
    """Sensitive-data discovery and drift monitoring (docs/monitoring.md)."""

    model_config = ConfigDict(extra="forbid")

    classify_sample_rows: int = Field(default=10_000, ge=1)  # values sampled per column
    classify_seed: int = 0  # the sample is seeded: the same data gives the same suggestions
    classify_min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)  # suggestions below are not shown
    phone_regions: list[str] = Field(default_factory=lambda: ["US"])  # regions of numbers written without +
    profile_sample_rows: int = Field(default=100_000, ge=1)  # rows behind a profile's quantiles and categories
    profile_top_categories: int = Field(default=50, ge=1)  # categories a profile keeps (the rest: "other")
    drift_wasserstein: float = Field(default=0.1, gt=0.0)  # Wasserstein distance ÷ reference σ
    drift_jensen_shannon: float = Field(default=0.1, gt=0.0)  # Jensen–Shannon distance (base 2)
    drift_psi: float = Field(default=0.25, gt=0.0)  # population stability index
    drift_null_rate: float = Field(default=0.05, gt=0.0)  # change of the null rate
    drift_share: float = Field(default=0.5, gt=0.0, le=1.0)  # share of drifted columns that alerts


class Settings(BaseSettings):
    """Every setting of govern (docs/configuration.md). Build them with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="GOVERN_", env_nested_delimiter="__", extra="forbid"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence, highest first: init arguments (the CLI), the environment, govern.yaml."""
        file = _settings_file.get()
        return (init_settings, env_settings, *((SettingsFile(settings_cls, file),) if file is not None else ()))

    policy_dir: Path = Path("policies")
    data_root: Path = Path("data")
    state_dir: Path = Path(".govern")

    # Masking keys. The master key is never logged or returned; see docs/security.md.
    masking_key: SecretStr | None = None
    masking_key_file: Path | None = None
    masking_key_id: str = "k1"

    s3: S3Settings = Field(default_factory=S3Settings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)

    # Engine
    batch_size: int = 32_768  # rows; peak memory of a streamed read scales with it (docs/performance.md)
    mask_threads: int = Field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    max_rows: int = 10_000_000
    # Small local Parquet datasets kept decoded (govern.storage.hot; docs/performance.md#fleet)
    hot_table_bytes: int = Field(default=64 << 20, ge=0)  # 0: off
    # Scan manifests (docs/adapters.md#tier-1): stored rows per fragment, lifetime of a fragment ticket
    fragment_rows: int = Field(default=1_000_000, ge=1)
    fragment_ticket_ttl: float = Field(default=3_600.0, gt=0)

    # Server (used by the gateway)
    host: str = "127.0.0.1"
    port: int = 8000
    # The console's policy dry run reads proposed policy folders only under this folder
    # (default: the parent of policy_dir, e.g. a checkout of another branch beside it).
    console_dry_run_root: Path | None = None
    audit_url: str | None = None  # default: sqlite under state_dir; or postgresql://...
    audit_table_prefix: str = "govern_"
    # Signed checkpoints of the audit chain's head (docs/security.md#audit): keep the file where
    # the audit store's writer cannot write. Default: state_dir/audit.checkpoints.
    audit_checkpoint_file: Path | None = None
    audit_public_keys: dict[str, str] = Field(default_factory=dict)  # key id -> public key (verify only)
    audit_queue_limit: int = Field(default=256, ge=1)  # submitted refusals waiting before coalescing
    ledger_url: str | None = None  # privacy budget ledger; default: sqlite under state_dir
    # A fleet (several instances over one PostgreSQL audit_url; docs/deployment.md): heartbeat
    # into <audit_table_prefix>fleet_instances, follow peers' policy reloads (LISTEN/NOTIFY) and
    # re-read the shared policy folder every fleet_recheck seconds (the convergence bound).
    instance_id: str | None = None  # default: host:pid:random
    fleet_heartbeat: float = Field(default=2.0, gt=0.0)
    fleet_recheck: float = Field(default=30.0, gt=0.0)
    fleet_follow: bool = True  # reload when a peer announces another policy version
    ledger_table_prefix: str = "govern_"
    dp_workers: int = 2  # differentially private releases computed at once (a bounded pool)
    oidc: OidcSettings | None = None
    watch_policies: bool = True
    reload_debounce_ms: int = 300
    max_concurrent_reads: int = 8
    max_reads_per_principal: int | None = None  # fair share of the read slots; default: half of them
    queue_timeout: float = 5.0
    request_timeout: float = 60.0  # seconds one request may work before its response starts (SQL: sql_timeout)
    http_idle_timeout: float = 5.0  # seconds an HTTP connection may sit idle between requests
    storage_timeout: float = 5.0
    log_level: str = "info"
    # HTTPS of `govern serve` through uvicorn's own TLS (docs/api.md#https): PEM files
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    # PostgreSQL wire server of `govern serve` (psql, psycopg, BI tools); see docs/pgwire.md
    pg_host: str = "127.0.0.1"
    pg_port: int | None = 6432  # 0 or null: no PostgreSQL wire server
    pg_idle_timeout: float = 3_600.0  # seconds a wire session may wait between messages
    pg_session_lifetime: float = 86_400.0  # seconds a wire session may last in all
    pg_tls_cert: Path | None = None  # PEM certificate (chain): answer SSLRequest with TLS (govern keys tls)
    pg_tls_key: Path | None = None  # PEM private key of pg_tls_cert
    pg_tls_required: bool = True  # with a certificate: refuse non-loopback clients that do not use TLS

    # Arrow Flight SQL server of `govern serve` (ADBC, pyarrow.flight); see docs/flight.md
    flight_host: str = "127.0.0.1"
    flight_port: int | None = 8815  # 0 or null: no Flight SQL server

    # Analyst SQL (POST /v1/sql and the PostgreSQL wire server); see docs/sql.md
    sql_timeout: float = 30.0  # seconds a query may run before it is interrupted
    sql_max_length: int = 100_000  # characters of SQL text
    sql_memory_limit: str = "1GB"  # DuckDB memory_limit of each query's sandbox
    sql_threads: int = Field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    sql_max_request_bytes: int = 1_048_576  # body size of POST /v1/sql
    sql_cache_bytes: int = 268_435_456  # masked views kept between queries (govern.sql.view_cache); 0: off
    # Worker processes that run analyst SQL (govern.sql.isolation): how many, the OS memory
    # limit of each (RLIMIT_DATA; "" or "0": none), the largest result batch one sends the gateway
    sql_workers: int = Field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    sql_worker_memory: str = "3GB"
    sql_batch_bytes: int = 67_108_864

    # Masked materializations (govern.storage.materialized; docs/sharing.md): masked Parquet per
    # (plan hash, data version), served to repeated /rows reads, Delta Sharing files, Spark fragments
    materialize_max_bytes: int = Field(default=1 << 30, ge=0)  # bytes the store keeps (LRU); 0: off
    materialize_url: str | None = None  # s3://bucket/prefix; default: state_dir/materialized
    materialize_on_read: bool = True  # a /rows read without columns, filter or limit builds one lazily

    # Delta Sharing (/delta-sharing; docs/sharing.md)
    sharing_file_ttl: float = Field(default=900.0, gt=0)  # seconds a file URL (its ticket) stays valid
    sharing_profile_ttl: float = Field(default=30 * 86_400.0, gt=0)  # seconds a profile's bearer token lives
    sharing_public_url: str | None = None  # base of file URLs (behind a proxy); default: the request's

    # Homomorphically encrypted views (CKKS); see docs/encryption.md
    he_key_dir: Path | None = None  # default: state_dir/he_keys (folders 0700, key files 0600)
    he_max_rows: int = 1_000_000  # rows of one encrypted view (pass a limit for more)
    he_max_slots: int = 16  # values one release or encrypted query may return (and groups per view)
    he_min_rows: int = 10  # selected rows each released aggregate (or group) must cover
    he_max_epsilon: float = 1.0  # epsilon one release or encrypted query may spend
    he_max_contributions: int = 1  # rows per privacy unit that count in a view
    he_flood_bits: int = 12  # release noise >= 2^bits x a bound on the CKKS error
    he_releases_per_minute: int = 30  # releases + encrypted queries per principal per process
    he_view_ttl: float = 86_400.0  # seconds a view token stays releasable
    he_max_concurrent: int = 2  # concurrent encryptions/evaluations per process
    he_max_request_bytes: int = 16_777_216  # body size of POST /v1/datasets/{name}/encrypted-query

    # Synthetic views (SDV); see docs/synthetic.md
    synthetic_max_rows: int = 1_000_000  # rows one synthetic request may ask for
    synthetic_fit_rows: int = 200_000  # real rows a model learns from (a seeded sample beyond)
    synthetic_fit_timeout: float = 3_600.0  # seconds a background fit may run before it is stopped


def _resolve_secret_refs(value: Any, base: Path) -> Any:
    """Replace ``{"$env": NAME}`` and ``{"$file": PATH}`` with the referenced text."""
    if isinstance(value, dict):
        if set(value) == {"$env"}:
            name = value["$env"]
            if name not in os.environ:
                raise InvalidRequest(f"settings refer to environment variable {name}, which is unset")
            return os.environ[name]
        if set(value) == {"$file"}:
            path = Path(value["$file"])
            path = path if path.is_absolute() else base / path
            try:
                return path.read_text().strip()
            except OSError as exc:
                raise InvalidRequest(f"settings refer to a file that cannot be read: {exc.strerror}") from None
        return {k: _resolve_secret_refs(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_secret_refs(v, base) for v in value]
    return value


class SettingsFile(YamlConfigSettingsSource):
    """``govern.yaml`` as a pydantic-settings source: secret references resolved, relative paths
    (and ``sqlite:///`` URLs) taken relative to the file's folder, so a demo folder can be moved
    as a whole. Unreadable or malformed files are an :class:`InvalidRequest` naming the file."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        self.path = path.absolute()  # paths in the file stay right when the process changes folder
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        p = self.path
        try:
            raw = super()._read_file(file_path)
        except OSError as exc:
            raise InvalidRequest(f"cannot read settings file {p}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise InvalidRequest(f"{p}: invalid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidRequest(f"{p}: settings must be a mapping")
        values: dict[str, Any] = _resolve_secret_refs(raw, p.parent)
        for key in FILE_PATHS:
            if values.get(key) is not None:
                v = Path(values[key])
                values[key] = v if v.is_absolute() else (p.parent / v)
        oidc = values.get("oidc")
        if isinstance(oidc, dict) and oidc.get("jwks_file"):
            v = Path(oidc["jwks_file"])
            oidc["jwks_file"] = v if v.is_absolute() else (p.parent / v)
        for url_key in ("audit_url", "ledger_url"):
            url = values.get(url_key)
            if isinstance(url, str) and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
                rel = Path(url.removeprefix("sqlite:///"))
                values[url_key] = f"sqlite:///{(p.parent / rel).resolve()}"
        return values


# Settings that name files or folders: relative to govern.yaml's folder when written there.
FILE_PATHS = ("policy_dir", "data_root", "state_dir", "masking_key_file", "he_key_dir", "audit_checkpoint_file",
              "ssl_certfile", "ssl_keyfile", "pg_tls_cert", "pg_tls_key",
              "console_dry_run_root")

# The settings file of the Settings being built now (load_settings sets it for one call): how
# Settings.settings_customise_sources learns which file to read.
_settings_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("govern_settings_file", default=None)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from pydantic-settings sources, highest precedence first: ``overrides``
    (keyword arguments: the CLI's options), ``GOVERN_*`` environment variables (nested fields
    with ``__``: ``GOVERN_S3__ENDPOINT_OVERRIDE`` overrides that one key of the file's ``s3``
    section), the settings file ``path`` (``govern.yaml``), then the defaults.
    """
    file = Path(path) if path is not None else None
    if file is not None and not file.is_file():
        raise InvalidRequest(f"cannot read settings file {file}: No such file")
    token = _settings_file.set(file)
    try:
        return Settings(**overrides)
    finally:
        _settings_file.reset(token)
