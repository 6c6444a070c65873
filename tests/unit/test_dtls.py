import asyncio
import time

import pytest

from sfu.core.certificate import Certificate, CertificateStore
from sfu.core.dtls import (
    SRTP_AEAD_AES_128_GCM,
    SRTP_AES128_CM_SHA1_80,
    DtlsClosed,
    DtlsConnected,
    DtlsEndpoint,
    DtlsFailed,
)

WALL = 1_700_000_000.0


@pytest.fixture(scope="module")
def server_cert():
    return Certificate.generate(WALL)


@pytest.fixture(scope="module")
def client_cert():
    return Certificate.generate(WALL)


def make_pair(server_cert, client_cert, *, client_profiles=None, server_fp=None, client_fp=None,
              now=0.0, server_release=None):
    server = DtlsEndpoint(
        server_cert, "server",
        [("sha-256", client_fp or client_cert.fingerprint_sha256())], now=now,
        release_after_connect=server_release,
    )
    kwargs = {}
    if client_profiles is not None:
        kwargs["srtp_profiles"] = client_profiles
    client = DtlsEndpoint(
        client_cert, "client",
        [("sha-256", server_fp or server_cert.fingerprint_sha256())], now=now, **kwargs,
    )
    return server, client


def pump(a, b, now, drop=lambda src, i, d: False, max_rounds=50):
    """Shuttle datagrams between a and b until both are quiet. Returns datagram count."""
    sent = 0
    for _ in range(max_rounds):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for _i, d in enumerate(src.take_datagrams()):
                moved = True
                sent += 1
                if not drop(src, sent, d):
                    dst.receive(d, now)
        if not moved:
            break
    return sent


def handshake(server, client, now=0.0):
    server.start(now)
    client.start(now)
    pump(client, server, now)
    return server.take_events(), client.take_events()


def test_handshake_gcm_keys_mirror(server_cert, client_cert):
    server, client = make_pair(server_cert, client_cert)
    s_events, c_events = handshake(server, client)
    assert server.state == client.state == "connected"
    (s_ev,) = s_events
    (c_ev,) = c_events
    assert isinstance(s_ev, DtlsConnected) and isinstance(c_ev, DtlsConnected)
    assert s_ev.profile == c_ev.profile == SRTP_AEAD_AES_128_GCM
    sk, ck = s_ev.keys, c_ev.keys
    assert len(sk.local_key) == 16 and len(sk.local_salt) == 12
    assert sk.local_key == ck.remote_key and sk.local_salt == ck.remote_salt
    assert sk.remote_key == ck.local_key and sk.remote_salt == ck.local_salt
    assert sk.local_key != sk.remote_key
    assert server.next_deadline() is None and client.next_deadline() is None


def test_cm80_when_client_offers_only_that(server_cert, client_cert):
    server, client = make_pair(
        server_cert, client_cert, client_profiles=(SRTP_AES128_CM_SHA1_80,)
    )
    (s_ev,), (c_ev,) = handshake(server, client)
    assert s_ev.profile == c_ev.profile == SRTP_AES128_CM_SHA1_80
    assert len(s_ev.keys.local_salt) == 14
    assert s_ev.keys.local_key == c_ev.keys.remote_key


def test_gcm_preferred_even_if_client_lists_it_second(server_cert, client_cert):
    server, client = make_pair(
        server_cert, client_cert,
        client_profiles=(SRTP_AES128_CM_SHA1_80, SRTP_AEAD_AES_128_GCM),
    )
    (s_ev,), (c_ev,) = handshake(server, client)
    assert s_ev.profile == SRTP_AEAD_AES_128_GCM  # with OpenSSL the server's order wins


def test_rsa_client_certificate(server_cert):
    rsa_cert = Certificate.generate(WALL, rsa_bits=2048)
    server, client = make_pair(server_cert, rsa_cert)
    (s_ev,), (c_ev,) = handshake(server, client)
    assert isinstance(s_ev, DtlsConnected) and isinstance(c_ev, DtlsConnected)


def test_rsa_server_certificate(client_cert):
    # ECDHE-RSA suites are on the list too (the SFU as a client of an RSA peer)
    rsa_cert = Certificate.generate(WALL, rsa_bits=2048)
    server, client = make_pair(rsa_cert, client_cert)
    (s_ev,), (c_ev,) = handshake(server, client)
    assert isinstance(s_ev, DtlsConnected) and isinstance(c_ev, DtlsConnected)


def test_wrong_fingerprint_fails(server_cert, client_cert):
    other = Certificate.generate(WALL)
    server, client = make_pair(server_cert, client_cert, client_fp=other.fingerprint_sha256())
    s_events, c_events = handshake(server, client)
    assert server.state == "failed"
    assert s_events == [DtlsFailed("fingerprint mismatch")]
    assert client.state == "failed"  # got the alert
    assert len(c_events) == 1 and isinstance(c_events[0], DtlsFailed)

    server, client = make_pair(server_cert, client_cert, server_fp=other.fingerprint_sha256())
    s_events, c_events = handshake(server, client)
    assert c_events == [DtlsFailed("fingerprint mismatch")]


def test_other_fingerprint_algorithms(server_cert, client_cert):
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding

    der = client_cert.cert.public_bytes(Encoding.DER)
    fp = ":".join(f"{b:02x}" for b in hashlib.sha384(der).digest())  # lower case in SDP
    server = DtlsEndpoint(server_cert, "server", [("SHA-384", fp)], now=0.0)
    client = DtlsEndpoint(
        client_cert, "client", [("sha-256", server_cert.fingerprint_sha256())], now=0.0
    )
    (s_ev,), _ = handshake(server, client)
    assert isinstance(s_ev, DtlsConnected)


def test_lost_flight_is_retransmitted(server_cert, client_cert):
    server, client = make_pair(server_cert, client_cert)
    now = 0.0
    server.start(now)
    client.start(now)
    hello = client.take_datagrams()
    assert hello  # ClientHello lost on the way
    deadline = client.next_deadline()
    assert deadline is not None and 0.9 < deadline < 1.1
    client.handle_timer(0.5)  # too early: nothing
    assert client.take_datagrams() == []
    now = deadline
    client.handle_timer(now)
    again = client.take_datagrams()
    assert again
    assert client.next_deadline() == pytest.approx(now + 2.0, abs=0.05)  # doubled
    for d in again:
        server.receive(d, now)
    # now lose the server's flight once
    lost = server.take_datagrams()
    assert lost
    now = server.next_deadline()
    server.handle_timer(now)
    for d in server.take_datagrams():
        client.receive(d, now)
    pump(client, server, now)
    assert server.state == client.state == "connected"


def test_handshake_gives_up(server_cert, client_cert):
    server, client = make_pair(server_cert, client_cert)
    client.start(0.0)
    now = 0.0
    sends = 0
    while client.state == "connecting":
        now = client.next_deadline()
        assert now is not None
        client.handle_timer(now)
        sends += len(client.take_datagrams())
    assert client.state == "failed"
    assert client.take_events() == [DtlsFailed("handshake timeout")]
    assert 29.0 <= now <= 31.0
    assert 3 <= sends <= 6  # 1, 2, 4, 8, 16 s backoff
    assert client.next_deadline() is None


def test_junk_after_release_is_counted_by_reason(server_cert, client_cert):
    """Every datagram a released server endpoint ignores is counted and its reason returned."""
    server, client = make_pair(server_cert, client_cert)
    handshake(server, client)
    assert server.state == "connected" and server._ssl is None
    assert server.receive(b"\x17\xfe\xfd" + b"\x00" * 10 + b"\x00\x04abcd", 0.0) == "app-data-after-release"
    assert server.receive(b"\x15\xfe\xfd" + b"\x00" * 8 + b"\x00\x02\x02\x28", 0.0) == "alert-after-release"
    assert server.receive(b"\x30" + b"\x00" * 20, 0.0) == "unknown-content-type"
    assert server.receive(b"\x17\x00", 0.0) == "not-dtls"
    assert dict(server.drops) == {"app-data-after-release": 1, "alert-after-release": 1, "unknown-content-type": 1, "not-dtls": 1}
    server.close()
    assert server.receive(b"\x17\xfe\xfd" + b"\x00" * 10 + b"\x00\x00", 0.0) == "after-end"


def test_junk_does_not_crash(server_cert, client_cert):
    server, client = make_pair(server_cert, client_cert)
    server.start(0.0)
    server.receive(b"", 0.0)
    server.receive(b"\x00\x01junk", 0.0)
    server.receive(b"\x80" * 100, 0.0)  # RTP range
    assert server.drops["not-dtls"] == 3
    # looks like a DTLS record but is no ClientHello: dropped before OpenSSL sees it
    server.receive(b"\x16\xfe\xfd" + b"\x00" * 8 + b"\x00\x05" + b"hello", 0.0)
    server.receive(b"\x16\xfe\xfd" + b"\xff" * 10 + b"\x00\x00\x00", 0.0)
    assert server.drops["before-client-hello"] == 2
    assert server.state == "connecting" and server.take_events() == []
    client.start(0.0)
    pump(client, server, 0.0)
    assert server.state == client.state == "connected"
    server.take_events()
    # unauthenticated records after the handshake are discarded by OpenSSL
    server.receive(b"\x17\xfe\xfd" + b"\x00" * 10 + b"\x00\x04abcd", 0.0)
    server.receive(b"\x15\xfe\xfd\x00\x00" + b"\x00" * 6 + b"\x00\x02\x02\x28", 0.0)
    assert server.state == "connected" and server.take_events() == []


def test_truncated_and_fuzzed_handshake_records(server_cert, client_cert):
    import random

    rng = random.Random(7)
    for _ in range(30):
        server, client = make_pair(server_cert, client_cert)
        server.start(0.0)
        client.start(0.0)
        for d in client.take_datagrams():
            mutated = bytearray(d)
            for _ in range(rng.randint(1, 5)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            server.receive(bytes(mutated[: rng.randint(1, len(mutated))]), 0.0)
        for d in server.take_datagrams():
            client.receive(d, 0.0)
        assert server.state in ("connecting", "failed")


def test_application_data_ignored_and_close_notify(server_cert, client_cert):
    server, client = make_pair(server_cert, client_cert, server_release=False)
    handshake(server, client)
    client._ssl.send(b"hello")  # an SCTP-ish payload we do not use
    for d in client._drain():
        server.receive(d, 1.0)
    client.take_datagrams()
    assert server.app_data_ignored == 1 and server.state == "connected"
    client.close()
    assert client.state == "closed"
    for d in client.take_datagrams():
        server.receive(d, 2.0)
    assert server.state == "closed"
    assert server.take_events() == [DtlsClosed()]
    server.receive(b"\x17" + b"\x00" * 20, 3.0)
    assert server.drops["after-end"] == 1


def test_flights_fit_mtu(server_cert):
    rsa_cert = Certificate.generate(WALL, rsa_bits=4096)  # big certificate: fragmented
    server, client = make_pair(server_cert, rsa_cert)
    server.start(0.0)
    client.start(0.0)
    sizes = []

    def record(src, i, d):
        sizes.append(len(d))
        return False

    pump(client, server, 0.0, drop=record)
    assert server.state == client.state == "connected"
    assert max(sizes) <= 1200


def test_certificate_lifetime_and_store():
    cert = Certificate.generate(WALL, lifetime_days=365)
    assert cert.not_after == pytest.approx(WALL + 365 * 86400, abs=1)
    assert cert.not_before == pytest.approx(WALL - 86400, abs=1)
    fp = cert.fingerprint_sha256()
    assert len(fp.split(":")) == 32 and fp == fp.upper()
    assert cert.pyopenssl_key is not None and cert.pyopenssl_cert is not None

    store = CertificateStore(lifetime_days=365, renew_before_days=30)
    first = store.current(WALL)
    assert store.current(WALL + 300 * 86400) is first
    renewed = store.current(WALL + 336 * 86400)  # within 30 days of expiry
    assert renewed is not first
    assert renewed.not_after > WALL + 336 * 86400 + 300 * 86400
    assert store.current(WALL + 337 * 86400) is renewed


def test_real_clock_retransmission_is_done_by_openssl(server_cert, client_cert):
    """With a real clock our deadline fires just after OpenSSL's own timer."""
    server, client = make_pair(server_cert, client_cert, now=time.monotonic())
    client.start(time.monotonic())
    first = client.take_datagrams()
    deadline = client.next_deadline()
    assert deadline is not None
    # not waiting a second here: only check the deadline follows OpenSSL's timeout
    remaining = client._ssl.DTLSv1_get_timeout()
    assert remaining is not None and abs((deadline - time.monotonic()) - remaining) < 0.1
    assert first


class _FakeIceTransport:
    """The two methods aiortc's RTCDtlsTransport uses, wired to our endpoint in memory."""

    role = "controlled"  # aiortc then takes the DTLS client role

    def __init__(self, server, loop):
        self.server = server
        self.loop = loop
        self.inbox = asyncio.Queue()

    async def _send(self, data):
        self.server.receive(data, self.loop.time())
        self.flush()

    async def _recv(self):
        return await self.inbox.get()

    def flush(self):
        for d in self.server.take_datagrams():
            self.inbox.put_nowait(d)


async def test_against_aiortc_client(server_cert):
    from aiortc.rtcdtlstransport import (
        RTCCertificate,
        RTCDtlsFingerprint,
        RTCDtlsParameters,
        RTCDtlsTransport,
    )
    from pylibsrtp import Policy, Session

    loop = asyncio.get_running_loop()
    a_cert = RTCCertificate.generateCertificate()
    a_fp = a_cert.getFingerprints()
    server = DtlsEndpoint(
        server_cert, "server", [(f.algorithm, f.value) for f in a_fp], now=loop.time()
    )
    server.start(loop.time())
    transport = _FakeIceTransport(server, loop)
    dtls = RTCDtlsTransport(transport, [a_cert])
    params = RTCDtlsParameters(
        fingerprints=[RTCDtlsFingerprint("sha-256", server_cert.fingerprint_sha256())]
    )
    await asyncio.wait_for(dtls.start(params), timeout=10)
    assert dtls.state == "connected"
    (event,) = server.take_events()
    assert isinstance(event, DtlsConnected)
    assert event.profile in (SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80)

    # our local keys protect what aiortc's receive session unprotects
    keys = event.keys
    profile = (
        Policy.SRTP_PROFILE_AEAD_AES_128_GCM
        if keys.profile == SRTP_AEAD_AES_128_GCM
        else Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    )
    policy = Policy(
        key=keys.local_key + keys.local_salt, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=profile,
    )
    rtp = bytes.fromhex("80600001000000640000abcd") + b"payload" * 10
    protected = Session(policy).protect(rtp)
    assert dtls._rx_srtp.unprotect(protected) == rtp
    await dtls.stop()


def test_server_releases_its_connection_and_still_sends_close_notify(server_cert, client_cert):
    server, client = make_pair(server_cert, client_cert)
    handshake(server, client)
    assert server.state == client.state == "connected"
    assert server._ssl is None and client._ssl is not None  # clients keep theirs
    client._ssl.send(b"hello")
    for d in client._drain():
        server.receive(d, 1.0)
    client.take_datagrams()
    assert server.app_data_ignored == 1
    server.close()
    assert server.state == "closed"
    for d in server.take_datagrams():
        client.receive(d, 2.0)
    assert client.state == "closed" and client.take_events() == [DtlsClosed()]


def test_released_server_resends_its_lost_final_flight(server_cert, client_cert):
    server, client = make_pair(server_cert, client_cert)
    server.start(0.0)
    client.start(0.0)
    final = []

    def lose_final(src, i, d):
        if src is server and server.state == "connected" and not final:
            final.append(d)  # the server's ChangeCipherSpec + Finished
            return True
        return False

    pump(client, server, 0.0, drop=lose_final)
    assert final and server.state == "connected" and server._ssl is None
    assert client.state == "connecting"
    now = client.next_deadline()
    client.handle_timer(now)  # the client repeats its last flight ...
    pump(client, server, now)  # ... and the server answers with the kept bytes
    assert client.state == "connected"
    assert server.take_events()[0].keys.local_key == client.take_events()[0].keys.remote_key


def test_released_server_cannot_authenticate_a_client_close_notify(server_cert, client_cert):
    server, client = make_pair(server_cert, client_cert)
    handshake(server, client)
    client.close()
    for d in client.take_datagrams():
        server.receive(d, 1.0)
    assert server.state == "connected" and server.drops["alert-after-release"] == 1
