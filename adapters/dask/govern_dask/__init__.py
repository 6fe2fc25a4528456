"""Governed reads in Dask: a dataset through the govern gateway, one partition per fragment.

:func:`read_dataset` asks the gateway for a scan manifest with the caller's API key and
purpose (one audited scan), and returns a lazy Dask DataFrame with one partition per fragment.
A partition's task holds only its fragment's URL and ticket — short-lived, bound to the
principal, purpose, plan, data version, columns and filters — so a Dask worker fetches masked
Arrow from the gateway and never sees the API key, storage credentials or masking keys.
"""

from govern_dask.read import KEY_ENV, Fragment, GatewayError, read_dataset, read_fragment

__all__ = ["KEY_ENV", "Fragment", "GatewayError", "read_dataset", "read_fragment"]
