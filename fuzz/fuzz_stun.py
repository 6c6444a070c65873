"""Fuzz target: STUN (sfu.wire.stun: is_stun, peek_username, parse_binding_request, parse_response,
and the responses built from what parsed), with aioice.stun under it.

Crash: any exception other than `StunError` from the parsers, any exception from `is_stun` /
`peek_username` (documented never to raise), or a response built from a parsed request that does
not parse back. The harness can fix up the header, MESSAGE-INTEGRITY (with the responder's password)
and FINGERPRINT around fuzzed attributes, so mutations reach the attribute parsers behind the checks.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import struct

from _common import Reader, instrumented, main

with instrumented(__name__):
    from sfu.wire import stun

PWD = "fuzzLocalPassword0123456"


def _message(msg_type: int, tid: bytes, attrs: bytes, sign: bool, fingerprint: bool) -> bytes:
    """Header + attributes, then MESSAGE-INTEGRITY (RFC 5389 §15.4) and FINGERPRINT (§15.5)."""
    attrs += b"\x00" * (-len(attrs) % 4)
    body = attrs
    if sign:
        header = struct.pack("!HHI12s", msg_type, len(body) + 24, stun.MAGIC_COOKIE, tid)
        mac = hmac.new(PWD.encode(), header + body, hashlib.sha1).digest()
        body += struct.pack("!HH", 0x0008, 20) + mac
    if fingerprint:
        header = struct.pack("!HHI12s", msg_type, len(body) + 8, stun.MAGIC_COOKIE, tid)
        crc = (binascii.crc32(header + body) ^ stun.FINGERPRINT_XOR) & 0xFFFFFFFF
        body += struct.pack("!HHI", stun.ATTR_FINGERPRINT, 4, crc)
    return struct.pack("!HHI12s", msg_type, len(body), stun.MAGIC_COOKIE, tid) + body


def check(data: bytes) -> None:
    r = Reader(data)
    mode = r.byte()
    if mode & 3 == 0:
        msg = r.rest()  # raw datagram
    else:
        msg_type = stun.BINDING_REQUEST_TYPE if mode & 4 == 0 else r.u16()
        tid = r.take(12).ljust(12, b"\x00")
        msg = _message(msg_type, tid, r.rest(), sign=mode & 3 >= 2, fingerprint=mode & 3 != 2)
    flagged = stun.is_stun(msg)
    assert isinstance(flagged, bool)
    user = stun.peek_username(msg)
    assert user is None or (flagged and isinstance(user, bytes))
    try:
        req = stun.parse_binding_request(msg, PWD)
    except stun.StunError as exc:
        assert isinstance(exc.reason, str)
    else:
        assert flagged
        ok = stun.binding_success(req, ("192.0.2.1", 40000), PWD)
        assert stun.parse_response(ok).transaction_id == req.transaction_id
        err = stun.binding_error(req, stun.ROLE_CONFLICT, "Role Conflict", PWD)
        assert stun.parse_response(err).transaction_id == req.transaction_id
    try:
        stun.parse_response(msg)
    except stun.StunError:
        pass
    if len(msg) >= 20:
        stun.binding_error(bytes(msg[8:20]), stun.BAD_REQUEST, "Bad Request", None)


if __name__ == "__main__":
    main(check)
