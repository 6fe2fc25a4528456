"""API keys: ``gk_<id>_<secret>``, stored only as a SHA-256 hash.

The secret is 256 random bits, so a fast hash is the right tool (as for GitHub tokens): there is
nothing to brute-force, and verification stays cheap on every request. The ``id`` part lets the
gateway find the stored hash without scanning; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

import yaml

PREFIX = "gk_"


def new_key() -> tuple[str, str, str]:
    """Return (key id, full key, stored hash)."""
    key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    key = f"{PREFIX}{key_id}_{secret}"
    return key_id, key, hash_key(key)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def parse_key(token: str) -> str | None:
    """The key id of a well-formed API key, else None."""
    if not token.startswith(PREFIX):
        return None
    body = token[len(PREFIX):]
    key_id, sep, secret = body.partition("_")
    if not sep or len(key_id) != 8 or not secret:
        return None
    return key_id


def verify(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(token), stored_hash)


def add_key_to_principals(principals_file: Path, principal: str) -> str:
    """Create a key for ``principal``, store its hash in principals.yaml, return the key.

    Rewrites the file with a YAML dump (comments at the top are kept).
    """
    text = principals_file.read_text(encoding="utf-8")
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    doc = yaml.safe_load(text) or {}
    entry = (doc.get("principals") or {}).get(principal)
    if entry is None:
        raise KeyError(principal)
    key_id, key, stored = new_key()
    entry.setdefault("api_keys", []).append({"id": key_id, "hash": stored})
    principals_file.write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return key


def issue_demo_keys(principals_file: Path, keys_json: Path) -> dict[str, str]:
    """One fresh key per demo principal; hashes into principals.yaml, keys into keys.json (0600)."""
    doc = yaml.safe_load(principals_file.read_text(encoding="utf-8")) or {}
    issued: dict[str, str] = {}
    for name, entry in (doc.get("principals") or {}).items():
        entry = entry or {}
        doc["principals"][name] = entry
        key_id, key, stored = new_key()
        entry["api_keys"] = [{"id": key_id, "hash": stored}]
        issued[name] = key
    text = principals_file.read_text(encoding="utf-8")
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    principals_file.write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    fd = os.open(keys_json, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(issued, fh, indent=2)
    os.chmod(keys_json, 0o600)
    return issued
