"""Token signing keys with key ids, the admin capability, and revocation.

A `KeySet` holds named HS256 keys (`kid` -> secret). The first one signs new tokens and puts its
`kid` in the JWT header (RFC 7515 §4.1.4); every key in the set verifies the tokens that name it,
so rotating is: add a new key first (it signs from now on), keep the old one until the tokens it
signed have expired, then remove it. A token without a `kid` (minted before keys had ids, or with
the plain `token_secret`) verifies only against the legacy key (`LEGACY_KID`), when there is one.

Tokens minted here also carry a token id (`jti`, RFC 7519 §4.1.7). `Revocations` lists revoked
token ids and participant ids (`sub`); `KeySet.verify` refuses a revoked token (401). Each entry
is kept until the latest moment a token it covers could still be valid (now + the 14-day lifetime
cap), then forgotten.

Time is a parameter (`now`) wherever it matters; nothing here reads the clock when `now` is given.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import jwt

from . import tokens
from .errors import Forbidden, Unauthorized

ADMIN = tokens.ADMIN  # the capability of the admin API, /api/stats, /metrics and the dashboard
LEGACY_KID = "default"  # the key made from `token_secret` alone
_KID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
MAX_KIDS = 16
PARSED_CACHE_SIZE = 1024


class Revoked(Unauthorized):
    """A valid token that was revoked (refused even where a token is optional)."""


@dataclass(frozen=True)
class Grant:
    """A verified token: who (`sub`), which token (`jti`, None for tokens minted without one),
    for which stream pattern, and its capabilities."""

    sub: str
    jti: str | None
    stream: str
    caps: frozenset[str]
    exp: int
    kid: str | None


class Revocations:
    """Revoked token ids and participant ids, each until no token it covers can still be valid."""

    def __init__(self) -> None:
        self.token_ids: dict[str, float] = {}  # jti -> forget after (wall clock, s)
        self.participants: dict[str, float] = {}  # sub -> forget after

    def revoke(self, *, token_id: str | None = None, participant: str | None = None, now: float | None = None) -> None:
        t = time.time() if now is None else now
        until = t + tokens.MAX_TTL_S + tokens.CLOCK_SKEW_S
        if token_id:
            self.token_ids[token_id] = until
        if participant:
            self.participants[participant] = until

    def is_revoked(self, sub: str, jti: str | None, now: float | None = None) -> bool:
        t = time.time() if now is None else now
        self._prune(t)
        return sub in self.participants or (jti is not None and jti in self.token_ids)

    def snapshot(self, now: float | None = None) -> dict[str, list[str]]:
        self._prune(time.time() if now is None else now)
        return {"token_ids": sorted(self.token_ids), "participants": sorted(self.participants)}

    def _prune(self, now: float) -> None:
        for table in (self.token_ids, self.participants):
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]


def check_kid(kid: str) -> str:
    if not kid or len(kid) > 64 or not set(kid) <= _KID_CHARS:
        raise ValueError(f"key id {kid!r} must be 1-64 of A-Z a-z 0-9 . _ -")
    return kid


class KeySet:
    """Signing and verifying keys, first one signs. `keys` is `[(kid, secret), ...]`."""

    def __init__(self, keys: Iterable[tuple[str, str | bytes]], revocations: Revocations | None = None) -> None:
        self.keys: dict[str, bytes] = {}
        for kid, secret in keys:
            check_kid(kid)
            if kid in self.keys:
                raise ValueError(f"key id {kid!r} appears twice")
            self.keys[kid] = secret.encode() if isinstance(secret, str) else secret
        if not self.keys:
            raise ValueError("a key set needs at least one key")
        if len(self.keys) > MAX_KIDS:
            raise ValueError(f"at most {MAX_KIDS} token keys")
        self.revocations = revocations if revocations is not None else Revocations()
        self._parsed: dict[str, tuple[object, str | None]] = {}

    @classmethod
    def from_config(cls, token_secret: str, token_keys: Iterable[Mapping[str, str]] = ()) -> KeySet:
        """`token_keys` (`[{"kid": ..., "secret": ...}, ...]`, the first signs); without any, the
        plain `token_secret` alone as the legacy key `LEGACY_KID`. To keep verifying tokens made with
        `token_secret` while rotating, list it in `token_keys` under the kid "default"."""
        pairs: list[tuple[str, str | bytes]] = [(k["kid"], k["secret"]) for k in token_keys]
        if not pairs:
            pairs.append((LEGACY_KID, token_secret))
        return cls(pairs)

    def replace(self, other: KeySet) -> list[str]:
        """Take `other`'s keys (a reloaded configuration), keeping this set's revocations; returns
        the key ids now in use, the signing one first."""
        self.keys = dict(other.keys)
        return list(self.keys)

    def _header_and_id(self, token: str) -> tuple[object, str | None]:
        """The header's `kid` and the claims' `jti`, unverified (the signature is checked next), kept
        for the tokens seen last: a join storm presents the same few tokens thousands of times."""
        known = self._parsed.get(token)
        if known is None:
            if not tokens._COMPACT_JWS.fullmatch(token):  # what PyJWT would raise on (non-ASCII...)
                raise Unauthorized("malformed token")
            try:
                kid = jwt.get_unverified_header(token).get("kid")
            except jwt.InvalidTokenError:
                raise Unauthorized("malformed token") from None
            known = (kid, _jti(token))
            if len(self._parsed) >= PARSED_CACHE_SIZE:
                self._parsed.clear()
            self._parsed[token] = known
        return known

    @property
    def signing_kid(self) -> str:
        return next(iter(self.keys))

    def mint(
        self,
        stream: str,
        publish: bool = False,
        subscribe: bool = False,
        admin: bool = False,
        ttl_s: float = tokens.DEFAULT_TTL_S,
        participant: str | None = None,
        now: float | None = None,
    ) -> str:
        """A token signed with the first key, its `kid` in the header and a fresh `jti`. An admin
        token is for every stream ("*"). `ValueError` as `tokens.mint`."""
        caps = [c for c, on in ((tokens.PUBLISH, publish), (tokens.SUBSCRIBE, subscribe), (ADMIN, admin)) if on]
        if not caps:
            raise ValueError("a token needs at least one capability (publish, subscribe or admin)")
        if admin and stream != "*":
            raise ValueError('an admin token is for every stream: use stream "*"')
        claims = tokens.claims_for(stream, caps, ttl_s, participant, now)
        claims["jti"] = secrets.token_urlsafe(9)
        kid = self.signing_kid
        return jwt.encode(claims, self.keys[kid], algorithm=tokens.ALGORITHM, headers={"kid": kid})

    def verify(self, token: str | None, stream: str, capability: str, now: float | None = None) -> Grant:
        """Check `token` for `capability` (publish, subscribe or admin) on `stream`. Raises
        `Unauthorized` (as `tokens.verify`, or an unknown key id, or revoked) or `Forbidden`."""
        if not token:
            raise Unauthorized("missing token")
        kid, jti = self._header_and_id(token)
        if kid is None:
            key = self.keys.get(LEGACY_KID)
            if key is None:
                raise Unauthorized("token has no key id")
        else:
            key = self.keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise Unauthorized("token signed with an unknown or removed key")
        claims = tokens.verify(key, token, stream, capability, now)
        if capability == ADMIN and claims.stream != "*":
            raise Forbidden("an admin token is for every stream")
        if self.revocations.is_revoked(claims.sub, jti, now):
            raise Revoked("token revoked")
        return Grant(claims.sub, jti, claims.stream, claims.caps, claims.exp, kid if isinstance(kid, str) else None)


def describe(token: str) -> tuple[str | None, str | None, str | None]:
    """`(sub, jti, kid)` of a token, unverified (for display)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError:
        return None, None, None
    return claims.get("sub"), claims.get("jti"), kid


def _jti(token: str) -> str | None:
    """The token id of a token whose signature was already checked."""
    try:
        value = jwt.decode(token, options={"verify_signature": False}).get("jti")
    except (jwt.InvalidTokenError, ValueError, AttributeError):  # a payload that is no JSON object
        return None
    return value if isinstance(value, str) else None
