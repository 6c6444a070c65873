"""The server's own consent requests (core/consent.py): fake clock, no sockets."""

from __future__ import annotations

from aioice import stun as aioice_stun

from sfu.core.consent import MAX_TRANSMISSIONS, ROUND_SPACING_S, ConsentRequests
from sfu.wire import stun

LOCAL_UFRAG, REMOTE_UFRAG, REMOTE_PWD = "srv1", "cli1", "client-password-0123456789"
CLIENT = ("192.0.2.10", 40000)
FORGED = ("198.51.100.7", 5000)


def answer(request: bytes, pwd: str = REMOTE_PWD, *, error: bool = False) -> bytes:
    """What a full ICE agent sends back to a Binding request addressed to it."""
    message = aioice_stun.parse_message(request)
    assert message.attributes["USERNAME"] == f"{REMOTE_UFRAG}:{LOCAL_UFRAG}"
    assert message.check_message_integrity(REMOTE_PWD.encode())
    assert "ICE-CONTROLLED" in message.attributes and "PRIORITY" in message.attributes
    response = aioice_stun.Message(
        aioice_stun.Method.BINDING,
        aioice_stun.Class.ERROR if error else aioice_stun.Class.RESPONSE,
        message.transaction_id, {"XOR-MAPPED-ADDRESS": CLIENT},
    )
    response.add_message_integrity(pwd.encode())
    return bytes(response)


def make() -> ConsentRequests:
    return ConsentRequests(LOCAL_UFRAG, REMOTE_UFRAG, REMOTE_PWD)


def test_an_answer_from_the_address_verifies_it():
    consent = make()
    consent.verify(CLIENT, 0.0)
    [(request, addr)] = consent.take_datagrams()
    assert addr == CLIENT and stun.is_binding_request(request)
    assert consent.receive_response(answer(request), CLIENT, 0.01)
    assert consent.is_verified(CLIENT) and consent.take_verified() == [CLIENT]
    assert consent.next_deadline() is None  # no more requests once answered


def test_a_silent_address_gets_a_bounded_round_then_is_left():
    consent = make()
    consent.verify(FORGED, 0.0)
    sent = consent.take_datagrams()
    times, now = [0.0], 0.0
    while consent.next_deadline() is not None:
        now = consent.next_deadline()
        consent.handle_timer(now)
        out = consent.take_datagrams()
        sent += out
        times += [now] * len(out)
    assert len(sent) == MAX_TRANSMISSIONS and all(addr == FORGED for _, addr in sent)
    assert times == [0.0, 0.5, 1.5, 3.5]  # RFC 8489 §6.2.1: RTO doubling from 500 ms
    assert consent.drops["consent-unanswered"] == 1 and not consent.is_verified(FORGED)
    # asked again right away (a forged check every few ms): nothing is sent
    consent.verify(FORGED, now + 0.1)
    assert consent.take_datagrams() == [] and consent.drops["consent-round-spaced"] == 1
    consent.verify(FORGED, now + ROUND_SPACING_S)
    assert len(consent.take_datagrams()) == 1


def test_answers_that_prove_nothing_are_refused():
    consent = make()
    consent.verify(CLIENT, 0.0)
    [(request, _)] = consent.take_datagrams()
    assert not consent.receive_response(answer(request), FORGED, 0.01)  # from elsewhere
    assert not consent.receive_response(answer(request, pwd="wrong-password-0123456789"), CLIENT, 0.01)
    assert not consent.receive_response(b"\x01\x01\x00\x00junk", CLIENT, 0.01)
    _, stray = stun.binding_request("x:y", REMOTE_PWD)
    assert not consent.receive_response(stray, CLIENT, 0.01)  # a transaction we never started
    assert not consent.is_verified(CLIENT)
    assert consent.drops == {
        "consent-unexpected-response": 2, "consent-bad-integrity": 1, "consent-malformed": 1,
    }
    assert not consent.receive_response(answer(request, error=True), CLIENT, 0.02)
    assert consent.drops["consent-error-response"] == 1 and not consent.is_verified(CLIENT)


def test_dtls_verification_and_forgetting():
    consent = make()
    consent.mark_verified(CLIENT)
    assert consent.take_verified() == [CLIENT]
    consent.verify(CLIENT, 0.0)
    assert consent.take_datagrams() == []  # nothing to ask
    consent.forget(CLIENT)  # its consent lapsed
    consent.verify(CLIENT, 1.0)
    assert len(consent.take_datagrams()) == 1


def test_a_new_address_replaces_the_round_and_restart_changes_credentials():
    consent = make()
    consent.verify(FORGED, 0.0)
    consent.take_datagrams()
    consent.set_credentials("srv2", "cli2", "new-client-password-000000")
    consent.verify(CLIENT, 0.1)
    [(request, addr)] = consent.take_datagrams()
    message = aioice_stun.parse_message(request)
    assert addr == CLIENT and message.attributes["USERNAME"] == "cli2:srv2"
    assert message.check_message_integrity(b"new-client-password-000000")
