"""The KFP v2 component: read a governed dataset with a purpose.

``governed_dataset(gateway, dataset, purpose, mode, columns)`` writes one ``Dataset`` artifact:

- ``mode="reference"`` (the default): a small JSON file naming the dataset, purpose, plan hash
  and data version — no data in the shared artifact store; later steps :func:`resolve
  <govern_kubeflow.reads.resolve>` it through the gateway;
- ``mode="data"``: the masked rows as Parquet (what the principal may see, nothing more).

Either way the artifact's metadata carries the plan hash, policy version, purpose, data version
and the audit record id of the read (lineage: "what data trained this model?").

The API key comes from a Kubernetes secret with a *fixed* name, ``govern-api-key`` (key
``api-key``), as the environment variable ``GOVERN_API_KEY`` — never a pipeline parameter:
parameters are stored with the run for everyone who can list runs, and KFP cannot take a
secret's name from a parameter anyway (kfp #9418, #10914). :func:`with_api_key` attaches it.

The component runs in an image with ``govern-kubeflow`` installed (``base_image``); the kfp
package is not installed again at run time.
"""

# no `from __future__ import annotations`: kfp reads the component signatures as types

import os

from kfp import dsl
from kfp.dsl import Dataset, Output

__all__ = ["BASE_IMAGE", "SECRET_KEY", "SECRET_NAME", "governed_dataset", "with_api_key"]

SECRET_NAME = "govern-api-key"
SECRET_KEY = "api-key"
BASE_IMAGE = os.environ.get("GOVERN_KUBEFLOW_IMAGE", "python:3.11-slim")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def governed_dataset(gateway: str, dataset: str, purpose: str, output: Output[Dataset],
                     mode: str = "reference", columns: str = "") -> None:
    """Read ``dataset`` under ``purpose`` through the govern gateway at ``gateway``."""
    from govern_kubeflow import reads

    if mode not in ("reference", "data"):
        raise ValueError(f"mode must be 'reference' or 'data', not {mode!r}")
    cols = [c.strip() for c in columns.split(",") if c.strip()] or None
    manifest = reads.scan(gateway, dataset, purpose, cols)
    ref = reads.reference(gateway, manifest)
    output.metadata.update(ref.metadata())
    output.metadata["govern.mode"] = mode
    if mode == "reference":
        with open(output.path, "w", encoding="utf-8") as fh:
            fh.write(ref.to_json())
        return
    output.metadata["govern.rows"] = reads.write_parquet(gateway, manifest, output.path)


def with_api_key(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """``task`` with ``GOVERN_API_KEY`` from the fixed-name secret ``govern-api-key``."""
    from kfp import kubernetes

    return kubernetes.use_secret_as_env(task, secret_name=SECRET_NAME,
                                        secret_key_to_env={SECRET_KEY: "GOVERN_API_KEY"})
