"""Regression data at rest: what a landed request keeps after its close (its forget prompts and key spans) is
sealed with Fernet (AES-128-CBC + HMAC-SHA256, from the `cryptography` package) under a key kept outside the
database: the config folder's `lineage.key`, created 0600 on first use. A copy of the database alone reads
nothing of it; deleting the key (or the rows) makes every sealed value unreadable.

The same key seals the decode-time guard a model version carries (`guard.fernet` in its folder): its strings
are the requests' sensitive values. No torch here: the API process imports this module."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from engine.schema.errors import SpecError
from store.paths import Paths, get_paths

KEY_FILE = "lineage.key"


class SealError(SpecError):
    """The key is missing or does not open this value."""


def key_path(paths: Paths | None = None) -> Path:
    return (paths or get_paths()).config / KEY_FILE


def _key(paths: Paths | None = None, create: bool = True) -> bytes:
    path = key_path(paths)
    if path.is_file():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise SealError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        return path.read_bytes().strip()
    if not create:
        raise SealError(f"no key at {path}: the sealed regression data cannot be read")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # O_EXCL: two processes creating the key at once cannot both win; the loser reads the winner's.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key


def seal(value, paths: Paths | None = None) -> str:
    """A JSON value sealed as a Fernet token (text)."""
    data = json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return Fernet(_key(paths)).encrypt(data).decode("ascii")


def unseal(token: str, paths: Paths | None = None):
    try:
        return json.loads(Fernet(_key(paths, create=False)).decrypt(token.encode("ascii")))
    except InvalidToken:
        raise SealError("the key does not open this sealed value (key replaced, or the value edited)") from None
