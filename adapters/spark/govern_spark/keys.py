"""Where executors find the masking keys: a location, never the key bytes.

A keyed mask (``hash``, ``tokenize``, ``noise``, ``date_shift``, ``randomized_response``) needs
the deployment's masking keys. Written into a Spark expression they would be literals of the
query plan, printed by ``explain()``, the Spark UI and the event log. So the plan carries only a
:class:`KeySource` — the path of a key file or the name of an environment variable that every
executor has (a mounted secret) — and each executor task reads the keys when it starts masking
(:meth:`KeySource.load`, govern's own key parser: ``id: base64:…`` lines, rotation, the active
id). The driver never needs to read them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from govern.errors import KeyMaterialError
from govern.mask.keys import KeyRing

__all__ = ["KeySource"]


@dataclass(frozen=True)
class _KeySettings:
    """The three settings :meth:`KeyRing.from_settings` reads, and nothing else."""

    masking_key_id: str
    masking_key_file: Path | None
    masking_key: SecretStr | None


@dataclass(frozen=True)
class KeySource:
    """The masking keys as every executor finds them, by location.

    ``file``: path of a govern key file (``govern keys`` writes one; ``masking_key_file`` in
    govern.yaml) present at the same path on every executor. ``env``: name of an environment
    variable holding one key (``base64:…``, ``hex:…``), e.g. from a Kubernetes secret set with
    ``spark.executorEnv``. ``key_id``: the active id (``masking_key_id``); it must be the id the
    plan was compiled with (``AccessPlan.key_id``), or pseudonyms would not match the gateway's.
    """

    file: str | None = None
    env: str | None = None
    key_id: str = "k1"

    def __post_init__(self) -> None:
        if (self.file is None) == (self.env is None):
            raise KeyMaterialError("a KeySource names exactly one of file= or env=")

    def load(self) -> KeyRing:
        """Read the keys where this task runs (an executor). Errors never quote key material."""
        secret: SecretStr | None = None
        if self.env is not None:
            text = os.environ.get(self.env)
            if text is None:
                raise KeyMaterialError(f"environment variable {self.env} is not set on this executor")
            secret = SecretStr(text)
        path = Path(self.file) if self.file is not None else None
        return KeyRing.from_settings(_KeySettings(self.key_id, path, secret))

    def __repr__(self) -> str:
        where = f"file={self.file!r}" if self.file is not None else f"env={self.env!r}"
        return f"KeySource({where}, key_id={self.key_id!r})"
