import struct

import pytest
from aioice import stun as aioice_stun

from sfu.wire import stun

LOCAL_PWD = "localpassword0123456789"
USERNAME = "lufrag:rufrag"


def request(**kwargs):
    kwargs.setdefault("use_candidate", False)
    return stun.binding_request(USERNAME, LOCAL_PWD, **kwargs)


def test_is_stun_and_peek_username():
    _, data = request()
    assert stun.is_stun(data)
    assert stun.peek_username(data) == USERNAME.encode()
    # RFC 7983 ranges: DTLS (20..63) and RTP (128..191) are not STUN
    assert not stun.is_stun(b"\x16" + data[1:])
    assert not stun.is_stun(b"\x80" + data[1:])
    assert not stun.is_stun(data[:-4])  # length mismatch
    assert not stun.is_stun(data[:4] + b"\x00\x00\x00\x00" + data[8:])  # no cookie
    assert not stun.is_stun(b"")


def test_peek_username_never_raises_on_junk():
    _, data = request()
    assert stun.peek_username(b"\x00\x01") is None
    # attribute length pointing past the end
    hdr = struct.pack("!HHI12s", 1, 8, stun.MAGIC_COOKIE, b"x" * 12)
    assert stun.peek_username(hdr + struct.pack("!HH", 0x0006, 200) + b"abcd") is None
    for cut in range(len(data)):
        stun.peek_username(data[:cut])
    no_user = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    no_user.add_fingerprint()
    assert stun.peek_username(bytes(no_user)) is None


def test_parse_valid_request():
    tid, data = request(use_candidate=True, priority=1234, controlling=True, tie_breaker=99)
    req = stun.parse_binding_request(data, LOCAL_PWD)
    assert req.transaction_id == tid
    assert req.username == USERNAME
    assert req.use_candidate is True
    assert req.priority == 1234
    assert req.ice_controlling and not req.ice_controlled
    assert req.tie_breaker == 99

    _, data = request(controlling=False, tie_breaker=7)
    req = stun.parse_binding_request(data, LOCAL_PWD)
    assert req.ice_controlled and not req.ice_controlling and req.tie_breaker == 7
    assert req.use_candidate is False


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: b"\x17" + d[1:], "not-stun"),
        (lambda d: d[:4] + b"\x00" * 4 + d[8:], "not-stun"),
        (lambda d: b"\x01\x01" + d[2:], "not-binding-request"),  # a success response
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "bad-fingerprint"),
    ],
)
def test_parse_rejections(mutate, reason):
    _, data = request()
    with pytest.raises(stun.StunError) as exc:
        stun.parse_binding_request(mutate(data), LOCAL_PWD)
    assert exc.value.reason == reason


def test_wrong_password_is_bad_integrity():
    _, data = request()
    with pytest.raises(stun.StunError) as exc:
        stun.parse_binding_request(data, "another-password-xxxxxx")
    assert exc.value.reason == "bad-integrity"


def test_missing_fingerprint_integrity_username():
    msg = aioice_stun.Message(
        aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST, attributes={"USERNAME": USERNAME}
    )
    with pytest.raises(stun.StunError) as exc:
        stun.parse_binding_request(bytes(msg), LOCAL_PWD)
    assert exc.value.reason == "bad-fingerprint"

    msg.add_fingerprint()  # fingerprint, no integrity
    with pytest.raises(stun.StunError) as exc:
        stun.parse_binding_request(bytes(msg), LOCAL_PWD)
    assert exc.value.reason == "bad-integrity"

    msg = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    msg.add_message_integrity(LOCAL_PWD.encode())
    with pytest.raises(stun.StunError) as exc:
        stun.parse_binding_request(bytes(msg), LOCAL_PWD)
    assert exc.value.reason == "no-username"


def test_malformed_attribute():
    # PRIORITY with a 2-byte value, then a valid fingerprint
    body = struct.pack("!HH", 0x0024, 2) + b"\x00\x01\x00\x00"
    hdr = struct.pack("!HHI12s", 1, len(body) + 8, stun.MAGIC_COOKIE, b"t" * 12)
    partial = hdr + body
    crc = aioice_stun.message_fingerprint(partial)
    data = partial + struct.pack("!HHI", 0x8028, 4, crc)
    with pytest.raises(stun.StunError) as exc:
        stun.parse_binding_request(data, LOCAL_PWD)
    assert exc.value.reason == "malformed"


@pytest.mark.parametrize("addr", [("192.0.2.7", 50000), ("2001:db8::1:2", 3478)])
def test_binding_success_roundtrip(addr):
    tid, data = request()
    req = stun.parse_binding_request(data, LOCAL_PWD)
    resp = stun.binding_success(req, addr, LOCAL_PWD)
    assert stun.is_stun(resp)
    msg = aioice_stun.parse_message(resp)
    assert msg.message_class == aioice_stun.Class.RESPONSE
    assert msg.transaction_id == tid
    assert msg.attributes["XOR-MAPPED-ADDRESS"] == addr
    assert msg.check_message_integrity(LOCAL_PWD.encode())
    assert "FINGERPRINT" in msg.attributes


def test_binding_error():
    _, data = request(controlling=False)
    req = stun.parse_binding_request(data, LOCAL_PWD)
    resp = stun.binding_error(req, 487, "Role Conflict", LOCAL_PWD)
    msg = aioice_stun.parse_message(resp)
    assert msg.message_class == aioice_stun.Class.ERROR
    assert msg.attributes["ERROR-CODE"] == (487, "Role Conflict")
    assert msg.check_message_integrity(LOCAL_PWD.encode())
    unsigned = aioice_stun.parse_message(stun.binding_error(req.transaction_id, 400, "Bad", None))
    assert unsigned.attributes["ERROR-CODE"] == (400, "Bad")
    assert "MESSAGE-INTEGRITY" not in unsigned.attributes
