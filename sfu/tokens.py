"""Participant tokens: HS256 JWTs signed with the server's secret, scoped to a stream and capabilities.

Claims: `sub` (participant id), `stream` (a stream name, or a pattern such as "shop-*" or "*" where
`*` matches any run of characters and every other character only itself), `caps` (a list of
"publish" / "subscribe"), `iat`, `exp`, optionally `nbf` (RFC 7519 §4.1, seconds since the epoch) and
`iss` = "sfu". Time is a parameter (`now`): nothing here reads the clock unless `now` is None.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from dataclasses import dataclass

import jwt

from .errors import Forbidden, Unauthorized

ISSUER = "sfu"
ALGORITHM = "HS256"
PUBLISH = "publish"
SUBSCRIBE = "subscribe"
ADMIN = "admin"  # the admin API, /api/stats, /metrics (sfu/keys.py mints it, for stream "*" only)
CAPABILITIES = (PUBLISH, SUBSCRIBE, ADMIN)
DEFAULT_TTL_S = 12 * 3600
MAX_TTL_S = 14 * 86400  # a leaked token stays useful for two weeks at most
CLOCK_SKEW_S = 60  # accept an `iat` this far in the future: tokens may be minted on another host
# RFC 7519 §4.1.5 allows "some small leeway" for `nbf`: the issuer's clock may run ahead of ours by
# as much as we already allow for `iat`, so a token valid "from now" works at once.
NBF_LEEWAY_S = CLOCK_SKEW_S

_STREAM_PATTERN = re.compile(r"[A-Za-z0-9._~\-*]{1,128}")
# RFC 7515 §7.1 compact serialization: three base64url parts. Anything else (a non-ASCII byte in the
# header, say) is refused here rather than left to the JWT library, which raises on it.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*")
MAX_NUMERIC_DATE = 2**53  # larger `nbf` values cannot be held exactly as seconds (and overflow floats)
_TTL = re.compile(r"\s*(\d+)\s*([smhd]?)\s*", re.IGNORECASE)
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
VERIFIED_CACHE_SIZE = 1024  # tokens whose signature and claims were checked (a join storm reuses a few)
# (key, token) -> (sub, stream pattern, caps, iat, exp, nbf): only what depends on neither the time,
# the stream nor the capability (those are checked on every call); cleared when full.
_Decoded = tuple[str, str, frozenset[str], int, int, "float | None"]
_verified: dict[tuple[bytes, str], _Decoded] = {}


@dataclass(frozen=True)
class Claims:
    """A verified token's content, named as the JWT claims (`stream` is the token's name or pattern)."""

    sub: str
    stream: str
    caps: frozenset[str]
    iat: int
    exp: int

    @property
    def participant(self) -> str:
        return self.sub


def mint(
    secret: str | bytes,
    stream: str,
    publish: bool,
    subscribe: bool,
    ttl_s: float = DEFAULT_TTL_S,
    participant: str | None = None,
    now: float | None = None,
) -> str:
    """A signed token; `ValueError` for no capability, a bad stream pattern or a TTL outside (0, 14 d]."""
    caps = [c for c, on in ((PUBLISH, publish), (SUBSCRIBE, subscribe)) if on]
    if not caps:
        raise ValueError("a token needs at least one capability (publish or subscribe)")
    return jwt.encode(claims_for(stream, caps, ttl_s, participant, now), _key(secret), algorithm=ALGORITHM)


def claims_for(
    stream: str, caps: list[str], ttl_s: float, participant: str | None, now: float | None
) -> dict[str, object]:
    """The claims of a new token (`mint`, and `sfu.keys.KeySet.mint` which adds a token id);
    `ValueError` for a bad stream pattern or a TTL outside (0, 14 d]."""
    if not _STREAM_PATTERN.fullmatch(stream):
        raise ValueError(f"stream {stream!r} must be 1-128 of A-Z a-z 0-9 . _ ~ - and the wildcard *")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"token lifetime must be between 1 s and 14 d, got {ttl_s} s")
    iat = int(time.time() if now is None else now)
    return {
        "sub": participant or f"p-{secrets.token_hex(6)}",
        "stream": stream,
        "caps": caps,
        "iat": iat,
        "exp": iat + int(ttl_s),
        "iss": ISSUER,
    }


def verify(secret: str | bytes, token: str | None, stream: str, capability: str, now: float | None = None) -> Claims:
    """Check `token` for `capability` on `stream`.

    Raises `Unauthorized` (missing, malformed, bad signature, wrong issuer, expired, not valid yet
    (`nbf`), lifetime over 14 d) or `Forbidden` (a valid token for another stream or without the capability).
    """
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}")
    if not token:
        raise Unauthorized("missing token")
    if not _COMPACT_JWS.fullmatch(token):
        raise Unauthorized("malformed token")
    cache_key = (_key(secret), token)
    known = _verified.get(cache_key)
    if known is None:
        known = _decode(cache_key[0], token)
        if len(_verified) >= VERIFIED_CACHE_SIZE:
            _verified.clear()
        _verified[cache_key] = known
    sub, pattern, caps, iat, exp, nbf = known
    t = time.time() if now is None else now
    if exp - iat > MAX_TTL_S:
        raise Unauthorized("token lifetime exceeds 14 days")
    if iat > t + CLOCK_SKEW_S:
        raise Unauthorized("token issued in the future")
    if t >= exp:
        raise Unauthorized("token expired")
    if nbf is not None and t + NBF_LEEWAY_S < nbf:  # RFC 7519 §4.1.5
        raise Unauthorized("token not valid yet (nbf)")
    if not stream_matches(pattern, stream):
        raise Forbidden(f"token does not allow stream {stream!r}")
    if capability not in caps:
        raise Forbidden(f"token does not allow {capability}")
    return Claims(sub=sub, stream=pattern, caps=caps, iat=iat, exp=exp)


def stream_matches(pattern: str, stream: str) -> bool:
    """`*` in `pattern` matches any run of characters (none included); every other character,
    `?` and `[` among them, matches only itself. Case-sensitive."""
    return _pattern_regex(pattern).fullmatch(stream) is not None


_PATTERN_CACHE_SIZE = 256
_patterns: dict[str, re.Pattern[str]] = {}


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    regex = _patterns.get(pattern)
    if regex is None:
        if len(_patterns) >= _PATTERN_CACHE_SIZE:
            _patterns.clear()
        regex = _patterns[pattern] = re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)
    return regex


def _decode(key: bytes, token: str) -> _Decoded:
    """Signature, algorithm, issuer and claim types of `token` (what does not depend on the time,
    the stream or the capability: cached by `verify`). Raises `Unauthorized`."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            # Times are checked by `verify` against `now`, not PyJWT's own clock.
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "require": ["exp", "iat", "iss"]},
        )
    except jwt.InvalidSignatureError:
        raise Unauthorized("bad token signature") from None
    except jwt.InvalidAlgorithmError:
        raise Unauthorized(f"token not signed with {ALGORITHM}") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized("token from another issuer") from None
    except jwt.MissingRequiredClaimError as e:
        raise Unauthorized(f"malformed token: no {e.claim!r} claim") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("malformed token") from None

    sub, pattern, caps, iat, exp, nbf = (claims.get(k) for k in ("sub", "stream", "caps", "iat", "exp", "nbf"))
    if not (
        isinstance(sub, str)
        and isinstance(pattern, str)
        and isinstance(caps, list)
        and all(isinstance(c, str) for c in caps)
        and _is_int(iat)
        and _is_int(exp)
        and (nbf is None or _is_number(nbf))
    ):
        raise Unauthorized("malformed token claims")
    assert isinstance(iat, int) and isinstance(exp, int)
    return sub, pattern, frozenset(caps), iat, exp, None if nbf is None else float(nbf)  # type: ignore[arg-type]


def parse_authorization(header: str | None) -> str | None:
    """The token in an `Authorization` value: `Bearer <t>` (scheme case-insensitive) or a bare token."""
    if header is None:
        return None
    value = header.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    return value or None


def parse_ttl(text: str) -> int:
    """Seconds in "3600", "45s", "30m", "12h" or "14d"; `ValueError` otherwise or for 0 / over 14 d."""
    m = _TTL.fullmatch(text)
    if not m:
        raise ValueError(f"bad duration {text!r}: expected a number with an optional unit s, m, h or d (e.g. 12h)")
    seconds = int(m.group(1)) * _TTL_UNITS[m.group(2).lower()]
    if not 0 < seconds <= MAX_TTL_S:
        raise ValueError(f"duration {text!r} must be between 1 s and 14 d")
    return seconds


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """A NumericDate (RFC 7519 §2): an integer or a finite non-integer number of seconds."""
    if _is_int(value):
        return abs(value) <= MAX_NUMERIC_DATE  # type: ignore[arg-type]
    return isinstance(value, float) and math.isfinite(value)


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret
