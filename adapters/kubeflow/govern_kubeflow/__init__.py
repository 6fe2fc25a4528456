"""govern_kubeflow: governed reads in Kubeflow Pipelines (KFP v2).

Pipeline authors import the component from :mod:`govern_kubeflow.component`
(:func:`~govern_kubeflow.component.governed_dataset`, reference or data mode, lineage in the
artifact's metadata, and :func:`~govern_kubeflow.component.with_api_key` for the fixed-name
secret); steps read with :mod:`govern_kubeflow.reads` (:func:`resolve` a reference artifact
through the gateway). This package imports no kfp itself: inside a running step kfp is the
runtime, whose ``kfp.dsl`` has no component decorator.
"""

from __future__ import annotations

from govern_kubeflow.reads import GatewayError, Reference, StaleReference, resolve

__all__ = ["GatewayError", "Reference", "StaleReference", "resolve"]
