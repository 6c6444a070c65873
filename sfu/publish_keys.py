"""Long-lived publish keys for encoders: one stream each, stored hashed, listed and revoked by an admin.

Publish tokens live 14 days at most, so an OBS profile holding one breaks every two weeks. A
publish key is the encoder's alternative (the "stream key" of other services): it names one
stream, it does not expire, and the admin API lists and revokes it (docs/admin.md). It is sent
where a token goes (OBS: *Bearer Token*), and only ever allows publishing to its stream.

Format: ``sfupk_<id>_<secret>``: `id` is 8 hex digits, public (listings, logs, the participant
`key:<id>` of the sessions it creates); `secret` is 32 random bytes, base64url. The server keeps
only SHA-256 of the secret (a hash of a 256-bit random value needs no slow KDF: nothing to
guess), compared in constant time. Keys live in a JSON file (mode 0600, replaced atomically) so
they survive restarts, or in memory when no file is given (tests, embedded servers).

Time is a parameter (`now`) where it is recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import ConfigError
from .errors import Forbidden, Unauthorized

PREFIX = "sfupk_"
_KEY = re.compile(r"sfupk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
_STREAM = re.compile(r"[A-Za-z0-9._~-]{1,128}")
MAX_KEYS = 10_000  # a bound on the file and the table: far more streams than one node serves
MAX_LABEL = 200


@dataclass(frozen=True)
class PublishKey:
    """One key as stored: everything but the secret, whose SHA-256 alone is kept."""

    id: str
    stream: str
    label: str
    created: float
    sha256: str

    def public(self) -> dict[str, object]:
        return {"id": self.id, "stream": self.stream, "label": self.label, "created": self.created}


def looks_like_key(credential: str | None) -> bool:
    """True for text in the publish-key form (it is then checked as a key, never as a JWT)."""
    return credential is not None and credential.startswith(PREFIX)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class PublishKeys:
    """The node's publish keys. `path` None: in memory only."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._keys: dict[str, PublishKey] = {}
        if path is not None:
            self._load(path)

    def create(self, stream: str, label: str, now: float) -> tuple[str, PublishKey]:
        """A new key for `stream`: returns the key text (shown once, never stored) and its entry.
        ValueError for a bad stream name or label, or when the table is full."""
        if not _STREAM.fullmatch(stream) or stream in (".", ".."):
            raise ValueError("stream must be 1-128 of A-Z a-z 0-9 . _ ~ - (a name, not a pattern)")
        if len(label) > MAX_LABEL or any(ord(c) < 32 for c in label):
            raise ValueError(f"label must be at most {MAX_LABEL} printable characters")
        if len(self._keys) >= MAX_KEYS:
            raise ValueError(f"at most {MAX_KEYS} publish keys")
        key_id = secrets.token_hex(4)
        while key_id in self._keys:
            key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        entry = PublishKey(key_id, stream, label, round(now, 3), _digest(secret))
        self._keys[key_id] = entry
        self._save()
        return f"{PREFIX}{key_id}_{secret}", entry

    def revoke(self, key_id: str) -> PublishKey | None:
        """Remove a key; the entry, or None if there was none."""
        entry = self._keys.pop(key_id, None)
        if entry is not None:
            self._save()
        return entry

    def list(self, stream: str | None = None) -> list[PublishKey]:
        return sorted((k for k in self._keys.values() if stream is None or k.stream == stream),
                      key=lambda k: (k.stream, k.created, k.id))

    def verify(self, credential: str, stream: str) -> PublishKey:
        """The key that `credential` is, if it allows publishing to `stream`. Raises Unauthorized
        (malformed, unknown or revoked key, wrong secret) or Forbidden (another stream's key)."""
        match = _KEY.fullmatch(credential)
        if match is None:
            raise Unauthorized("malformed publish key")
        entry = self._keys.get(match.group(1))
        if entry is None or not hmac.compare_digest(_digest(match.group(2)), entry.sha256):
            raise Unauthorized("unknown or revoked publish key")
        if entry.stream != stream:
            raise Forbidden("this publish key is for another stream")
        return entry

    # -- storage ---------------------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        try:
            raw = path.read_text()
        except FileNotFoundError:
            return
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the publish keys: {e.strerror}") from None
        try:
            items = json.loads(raw)["keys"]
            for item in items:
                entry = PublishKey(str(item["id"]), str(item["stream"]), str(item.get("label", "")),
                                   float(item["created"]), str(item["sha256"]))
                self._keys[entry.id] = entry
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}: not a publish keys file ({e})") from None

    def _save(self) -> None:
        if self.path is None:
            return
        data = json.dumps({"keys": [asdict(k) for k in self.list()]}, indent=1)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".publish-keys-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
                f.write(data + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
