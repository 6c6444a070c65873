"""Fuzz target: bearer tokens (sfu.tokens.parse_authorization and verify, and sfu.keys.KeySet.verify,
the HTTP layer's entry, with PyJWT under them).

The input is split into an Authorization header, a requested stream name, a capability and a time.
In half of the runs the harness signs fuzzed claims (the JSON payload) with the server's secret, so
mutations reach the claim checks behind the signature; otherwise the header is taken as is.
Crash: any exception from `parse_authorization` (documented never to raise), or other than
`Unauthorized` / `Forbidden` from either `verify`; claims returned that contradict the request, or
the two verifiers disagreeing on a token without a key id (the key set's legacy key is the secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from _common import Reader, instrumented, main

with instrumented(__name__):
    from sfu import keys, tokens
    from sfu.errors import Forbidden, Unauthorized

SECRET = b"fuzz-secret-0123456789abcdef0123"
KEYSET = keys.KeySet.from_config(SECRET.decode())
_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def _signed(payload: bytes) -> str:
    body = _HEADER + b"." + base64.urlsafe_b64encode(payload).rstrip(b"=")
    sig = base64.urlsafe_b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).rstrip(b"=")
    return (body + b"." + sig).decode()


def check(data: bytes) -> None:
    r = Reader(data)
    mode = r.byte()
    now = float(r.u32()) * 2 + r.byte() / 256
    capability = tokens.CAPABILITIES[mode >> 7]
    stream = r.take(r.byte()).decode("utf-8", "replace")
    if mode & 1:
        header: str | None = "Bearer " + _signed(r.rest())
    elif mode & 2:
        header = None
    else:
        header = r.rest().decode("utf-8", "surrogateescape")
    token = tokens.parse_authorization(header)
    assert token is None or (isinstance(token, str) and token)
    try:
        claims = tokens.verify(SECRET, token, stream, capability, now=now)
    except (Unauthorized, Forbidden) as exc:
        claims = None
        error: type = type(exc)
    else:
        assert capability in claims.caps
        assert claims.iat <= now + tokens.CLOCK_SKEW_S and now < claims.exp
    try:
        grant = KEYSET.verify(token, stream, capability, now=now)
    except (Unauthorized, Forbidden) as exc:
        # the key set also refuses what `tokens.verify` accepts only for a key id it does not know
        assert claims is None or "key" in str(exc), exc
        return
    assert claims is not None, f"KeySet accepted what tokens.verify refused ({error.__name__})"
    assert grant.sub == claims.sub and grant.caps == claims.caps


if __name__ == "__main__":
    main(check)
