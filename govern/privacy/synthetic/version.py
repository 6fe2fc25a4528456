"""Which model serves a dataset: the key of (data version, configuration).

A model is reused for as long as both stay the same. The *data version* is what storage says
about the dataset's files (path within the dataset, size, modification time — for S3 the
object's size and last-modified); the *configuration* is the columns' roles (which follow from catalog tags,
levels and the ``g2`` tag hierarchy), the ``synthesizer:`` spec and govern's recipe version.
Any change gives a new key, so a new data file or a catalog edit makes the next request fit a
new model ("refit on demand"); an unchanged dataset never refits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds

from govern.policy.model import PolicySet
from govern.privacy.synthetic.roles import ColumnRole, column_roles, config_hash, tag_parents_of
from govern.privacy.synthetic.spec import SynthesizerSpec, spec_of
from govern.storage.version import data_version

__all__ = ["ModelRef", "data_version", "model_ref"]


@dataclass(frozen=True)
class ModelRef:
    """Everything needed to fit or find the model of one dataset (picklable: it is handed to
    the fit process, so the child fits exactly what the parent keyed)."""

    dataset: str
    key: str
    version: str
    spec: SynthesizerSpec
    roles: tuple[ColumnRole, ...]
    location: str
    format: str
    schema: pa.Schema

    @property
    def learned(self) -> list[str]:
        return [r.name for r in self.roles if r.role == "model"]

    @property
    def generated(self) -> list[ColumnRole]:
        return [r for r in self.roles if r.role == "generate"]


def model_ref(policy: PolicySet, name: str, dataset: ds.Dataset, schema: pa.Schema) -> ModelRef:
    """The model reference for catalog dataset ``name`` as it is in storage now."""
    entry = policy.datasets[name]
    spec = spec_of(entry)
    roles = column_roles(entry, schema, spec, tag_parents_of(policy))
    version = data_version(dataset, entry.location)
    key = hashlib.sha256(f"{name}\0{version}\0{config_hash(name, roles, spec)}".encode()).hexdigest()[:32]
    return ModelRef(name, key, version, spec, roles, entry.location, entry.format, schema)
