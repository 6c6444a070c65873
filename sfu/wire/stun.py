"""STUN for an ICE-lite responder: a fast pre-parse for the demultiplexer, plus Binding
request validation and response building on top of `aioice.stun` (RFC 5389 / RFC 8489,
ICE attributes from RFC 8445 §7.1).

Pure functions: bytes in, values or bytes out. No state, no clock, no I/O.
"""

from __future__ import annotations

import binascii
import os
import struct
from dataclasses import dataclass

from aioice import stun as _stun

MAGIC_COOKIE = 0x2112A442
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E  # RFC 5389 §15.5: CRC-32 XOR'ed with "STUN"
ATTR_USERNAME = 0x0006
ATTR_FINGERPRINT = 0x8028
BINDING_REQUEST_TYPE = 0x0001  # method Binding, class request

ROLE_CONFLICT = 487  # RFC 8445 §7.3.1.1
BAD_REQUEST = 400
UNAUTHORIZED = 401

_HEADER = struct.Struct("!HHI12s")
_ATTR = struct.Struct("!HH")


class StunError(Exception):
    """A datagram that is not an acceptable Binding request; `reason` is a counter name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BindingRequest:
    """A Binding request whose FINGERPRINT and MESSAGE-INTEGRITY were verified."""

    transaction_id: bytes
    username: str
    use_candidate: bool
    priority: int | None
    ice_controlling: bool
    ice_controlled: bool
    tie_breaker: int | None  # from ICE-CONTROLLING or ICE-CONTROLLED, whichever is present


def is_stun(data: bytes) -> bool:
    """RFC 7983 §7: first byte 0..3; plus the magic cookie and a consistent length."""
    if len(data) < HEADER_LENGTH or data[0] > 3:
        return False
    length = (data[2] << 8) | data[3]
    if length & 3 or HEADER_LENGTH + length != len(data):
        return False
    return int.from_bytes(data[4:8], "big") == MAGIC_COOKIE


def is_binding_request(data: bytes) -> bool:
    """A STUN Binding request (RFC 8489 §5: method Binding, class request), by its header alone."""
    return len(data) >= HEADER_LENGTH and data[0] == 0 and data[1] == BINDING_REQUEST_TYPE


def peek_username(data: bytes) -> bytes | None:
    """USERNAME of a STUN message without building objects; None on junk. Never raises."""
    if not is_stun(data):
        return None
    pos = HEADER_LENGTH
    end = len(data)
    while pos + 4 <= end:
        attr_type = (data[pos] << 8) | data[pos + 1]
        attr_len = (data[pos + 2] << 8) | data[pos + 3]
        value_end = pos + 4 + attr_len
        if value_end > end:
            return None
        if attr_type == ATTR_USERNAME:
            return bytes(data[pos + 4 : value_end])
        pos = value_end + ((4 - attr_len % 4) % 4)
    return None


def _fingerprint_ok(data: bytes) -> bool:
    """RFC 5389 §15.5: FINGERPRINT must be the last attribute and match the CRC."""
    if len(data) < HEADER_LENGTH + 8:
        return False
    pos = len(data) - 8
    attr_type, attr_len = _ATTR.unpack_from(data, pos)
    if attr_type != ATTR_FINGERPRINT or attr_len != 4:
        return False
    expected = (binascii.crc32(data[:pos]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
    return int.from_bytes(data[pos + 4 :], "big") == expected


def parse_binding_request(data: bytes, local_pwd: str) -> BindingRequest:
    """Validate a Binding request for ICE (RFC 8445 §7.3) or raise StunError(reason).

    Reasons: "not-stun", "malformed", "not-binding-request", "bad-fingerprint" (missing,
    not last, or wrong), "no-username", "bad-integrity" (missing or wrong).
    """
    if not is_stun(data):
        raise StunError("not-stun")
    if _HEADER.unpack_from(data)[0] != BINDING_REQUEST_TYPE:
        raise StunError("not-binding-request")
    if not _fingerprint_ok(data):
        raise StunError("bad-fingerprint")
    try:
        message = _stun.parse_message(data)
    except (ValueError, struct.error, UnicodeDecodeError, IndexError):
        raise StunError("malformed") from None
    attrs = message.attributes
    username = attrs.get("USERNAME")
    if not username:
        raise StunError("no-username")
    if "MESSAGE-INTEGRITY" not in attrs or not message.check_message_integrity(
        local_pwd.encode("utf8")
    ):
        raise StunError("bad-integrity")
    controlling = attrs.get("ICE-CONTROLLING")
    controlled = attrs.get("ICE-CONTROLLED")
    return BindingRequest(
        transaction_id=message.transaction_id,
        username=username,
        use_candidate="USE-CANDIDATE" in attrs,
        priority=attrs.get("PRIORITY"),
        ice_controlling=controlling is not None,
        ice_controlled=controlled is not None,
        tie_breaker=controlling if controlling is not None else controlled,
    )


def binding_success(request: BindingRequest, addr: tuple[str, int], local_pwd: str) -> bytes:
    """Success response with XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and FINGERPRINT."""
    message = _stun.Message(
        _stun.Method.BINDING,
        _stun.Class.RESPONSE,
        transaction_id=request.transaction_id,
        attributes={"XOR-MAPPED-ADDRESS": (addr[0], addr[1])},
    )
    message.add_message_integrity(local_pwd.encode("utf8"))
    return bytes(message)


def binding_error(
    request: BindingRequest | bytes, code: int, reason: str, local_pwd: str | None
) -> bytes:
    """Error response (e.g. 487 Role Conflict, 400 Bad Request).

    `request` may be a transaction id when the request did not validate; `local_pwd=None`
    leaves the response unsigned (RFC 5389 §10.1.2: no integrity on 400/401).
    """
    tid = request if isinstance(request, bytes) else request.transaction_id
    message = _stun.Message(
        _stun.Method.BINDING,
        _stun.Class.ERROR,
        transaction_id=tid,
        attributes={"ERROR-CODE": (code, reason)},
    )
    if local_pwd is not None:
        message.add_message_integrity(local_pwd.encode("utf8"))
    else:
        message.add_fingerprint()
    return bytes(message)


def binding_request(
    username: str,
    password: str,
    *,
    use_candidate: bool = False,
    priority: int = 0x6E7F1EFF,
    controlling: bool = True,
    tie_breaker: int | None = None,
) -> tuple[bytes, bytes]:
    """A signed Binding request as a browser would send it (for test clients)."""
    transaction_id = os.urandom(12)
    if tie_breaker is None:
        tie_breaker = int.from_bytes(os.urandom(8), "big")
    attributes: dict[str, object] = {"USERNAME": username, "PRIORITY": priority}
    attributes["ICE-CONTROLLING" if controlling else "ICE-CONTROLLED"] = tie_breaker
    if use_candidate:
        attributes["USE-CANDIDATE"] = None
    message = _stun.Message(
        _stun.Method.BINDING, _stun.Class.REQUEST, transaction_id, attributes
    )
    message.add_message_integrity(password.encode("utf8"))
    return transaction_id, bytes(message)


def parse_response(data: bytes) -> _stun.Message:
    """Parse any STUN message with aioice (for test clients). Raises StunError("malformed")."""
    try:
        return _stun.parse_message(data)
    except (ValueError, struct.error, UnicodeDecodeError, IndexError):
        raise StunError("malformed") from None
