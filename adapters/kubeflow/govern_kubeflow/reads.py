"""Governed reads for pipeline steps: a scan manifest, its fragments, and references to both.

Why references: Kubeflow stores every namespace's artifacts in one shared store (kfp #1223,
#4649), so a step that writes data — raw or masked — into its output artifact spreads it to
whoever can read that store. A *reference* artifact holds only what identifies the read — the
dataset, the purpose, the access plan's hash and the data version — and is resolved through
the gateway downstream, by a step with its own credentials, under the policy in force then:
:func:`resolve` refuses when the plan or the data moved since the reference was made, so a
model's lineage names exactly what trained it.

Everything here is HTTP (httpx) and Arrow: a pipeline image needs neither govern nor its
server. The API key is read from the environment (``GOVERN_API_KEY``, filled from a fixed-name
Kubernetes secret, see :mod:`govern_kubeflow.component`) and never written anywhere.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["KEY_ENV", "GatewayError", "Reference", "StaleReference", "fetch", "resolve", "scan", "write_parquet"]

KEY_ENV = "GOVERN_API_KEY"


class GatewayError(RuntimeError):
    """The gateway refused or failed: status, problem type and detail (never a credential)."""


class StaleReference(GatewayError):
    """The plan or the data changed since the reference was made."""


@dataclass(frozen=True)
class Reference:
    """What identifies a governed read. Lineage: ``scan_id`` is the audit record of the read."""

    gateway: str
    dataset: str
    purpose: str
    plan_hash: str
    policy_version: str | None
    data_version: str
    scan_id: str
    columns: tuple[str, ...]

    def metadata(self) -> dict[str, Any]:
        """Artifact metadata: plan hash, policy version, purpose, audit record id (lineage)."""
        return {"govern.dataset": self.dataset, "govern.purpose": self.purpose, "govern.plan_hash": self.plan_hash,
                "govern.policy_version": self.policy_version or "", "govern.data_version": self.data_version,
                "govern.audit_record_id": self.scan_id, "govern.gateway": self.gateway}

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "columns": list(self.columns)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Reference:
        data = json.loads(text)
        return cls(**{**data, "columns": tuple(data["columns"])})


def _key() -> str:
    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise GatewayError(f"no API key: set {KEY_ENV} (in a pipeline: the 'govern-api-key' secret)")
    return key


def _check(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        detail = f"{body.get('type', '')}: {body.get('detail', '')}"
    except ValueError:
        detail = response.text[:200]
    raise GatewayError(f"gateway answered {response.status_code} ({detail})")


def scan(gateway: str, dataset: str, purpose: str, columns: list[str] | None = None,
         timeout: float = 60.0) -> dict[str, Any]:
    """The scan manifest (``POST /v1/datasets/{name}/scan``): one audited scan, no data yet."""
    body: dict[str, Any] = {"columns": columns} if columns else {}
    r = httpx.post(f"{gateway.rstrip('/')}/v1/datasets/{dataset}/scan", json=body, timeout=timeout,
                   headers={"Authorization": f"Bearer {_key()}", "X-Purpose": purpose})
    _check(r)
    return r.json()


def reference(gateway: str, manifest: dict[str, Any]) -> Reference:
    return Reference(gateway.rstrip("/"), manifest["dataset"], manifest["purpose"], manifest["plan_hash"],
                     manifest.get("policy_version"), manifest["data_version"], manifest["scan_id"],
                     tuple(manifest["columns"]))


def fetch(gateway: str, manifest: dict[str, Any], timeout: float = 60.0) -> Iterator[pa.RecordBatch]:
    """The manifest's fragments, in order, each fetched with its ticket only."""
    base = gateway.rstrip("/")
    for frag in manifest["fragments"]:
        r = httpx.get(base + frag["url"], headers={"Authorization": f"Bearer {frag['ticket']}"}, timeout=timeout)
        _check(r)
        yield from pa.ipc.open_stream(r.content)


def schema_of(manifest: dict[str, Any]) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(manifest["schema"])))


def write_parquet(gateway: str, manifest: dict[str, Any], path: str) -> int:
    """Write the masked rows of ``manifest`` to ``path`` as Parquet; returns the row count."""
    rows = 0
    with pq.ParquetWriter(path, schema_of(manifest)) as writer:
        for batch in fetch(gateway, manifest):
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def resolve(ref: Reference, gateway: str | None = None) -> pa.Table:
    """Read what ``ref`` names, through the gateway, with this step's own API key and the
    reference's purpose — refused (:class:`StaleReference`) if the access plan or the data
    changed since the reference was made."""
    url = gateway or ref.gateway
    manifest = scan(url, ref.dataset, ref.purpose, list(ref.columns))
    if manifest["plan_hash"] != ref.plan_hash:
        raise StaleReference(f"the access plan of {ref.dataset!r} under {ref.purpose!r} is not the one the "
                             f"reference was made under (policy, grants or principal changed; plan {ref.plan_hash[:12]} → {manifest['plan_hash'][:12]})")
    if manifest["data_version"] != ref.data_version:
        raise StaleReference(f"the data of {ref.dataset!r} changed since the reference was made "
                             f"({ref.data_version} → {manifest['data_version']})")
    return pa.Table.from_batches(list(fetch(url, manifest)), schema=schema_of(manifest))
