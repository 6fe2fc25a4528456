"""Writing masking key files (``id: base64:...`` lines, mode 0600). Reading is in ``keys``."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path


def write_key_file(path: Path, key_id: str = "k1") -> None:
    """Create ``path`` with one fresh 256-bit key, or append a new id to rotate.

    The file is created 0600 and the key is never printed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = f"{key_id}: base64:{base64.b64encode(secrets.token_bytes(32)).decode()}\n"
    if path.exists():
        existing = path.read_text()
        if any(ln.split(":", 1)[0].strip() == key_id for ln in existing.splitlines() if ":" in ln):
            raise ValueError(f"key id '{key_id}' already exists in {path}")
        with path.open("a") as fh:
            fh.write(line)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# govern masking keys: `id: key`; the active id is masking_key_id in govern.yaml\n")
        fh.write(line)
