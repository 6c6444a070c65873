"""Push-driven DTLS 1.2 for DTLS-SRTP (RFC 6347, RFC 5764) on pyOpenSSL memory BIOs.

Inputs: `start(now)`, `receive(datagram, now)`, `handle_timer(now)`, `close()`.
Outputs: `take_datagrams()` (records packed into datagrams of at most MTU bytes),
`take_events()` (DtlsConnected, DtlsFailed, DtlsClosed) and `next_deadline()`.

Timers: OpenSSL's DTLS timer reads the real clock and cannot be driven from outside, so
the retransmission schedule is kept here on the `now` clock (RFC 6347 §4.2.4.1: 1 s,
doubling, at most 60 s). When it fires, OpenSSL retransmits if its own timer agrees;
otherwise (a fake clock, or a timer firing a hair early) the last flight is re-sent as
it was, which is exactly what a lossy network would have delivered.

Memory: one `SSL.Context` per certificate and profile list is shared by every endpoint (session
cache off). A server-role endpoint drops its `SSL.Connection` once the handshake is done and the
SRTP keys are exported (`release_after_connect`, the default for servers: DTLS carries nothing
else here). Before it goes, the close_notify alert (RFC 5246 §7.2.1) is produced and kept as
bytes, and so is the final flight (ChangeCipherSpec + Finished): when the client repeats its
last flight because ours was lost (RFC 6347 §4.2.4), the kept bytes are sent again, which is what
OpenSSL would do. What can no longer be done: authenticate records the client sends afterwards.
Its application data was ignored anyway; its close_notify can no longer be told from a forged
alert, so it is counted (`drops["alert-after-release"]`) and the session ends with the client's
WHEP DELETE or ICE consent expiry instead.
"""

from __future__ import annotations

import collections
import hashlib
import weakref
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from sfu.core.certificate import Certificate

SRTP_AES128_CM_SHA1_80 = 0x0001  # RFC 5764 §4.1.2
SRTP_AEAD_AES_128_GCM = 0x0007  # RFC 7714 §14.2
# profile -> (OpenSSL name, master key length, master salt length)
SRTP_PROFILES: dict[int, tuple[bytes, int, int]] = {
    SRTP_AEAD_AES_128_GCM: (b"SRTP_AEAD_AES_128_GCM", 16, 12),
    SRTP_AES128_CM_SHA1_80: (b"SRTP_AES128_CM_SHA1_80", 16, 14),
}
_PROFILE_BY_NAME = {name: profile for profile, (name, _, _) in SRTP_PROFILES.items()}

# ECDSA and RSA suites: GStreamer's webrtcbin uses an RSA certificate.
CIPHER_LIST = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA"
)
DTLS1_2_VERSION = 0xFEFD
DTLS_MTU = 1200  # bytes per datagram: a flight's records fit common paths without IP fragments
RECORD_HEADER_LENGTH = 13  # RFC 6347 §4.1
INITIAL_RETRANSMIT_S = 1.0  # RFC 6347 §4.2.4.1
MAX_RETRANSMIT_S = 60.0
RETRANSMIT_MARGIN_S = 0.01  # fire just after OpenSSL's own timer so it does the resend
HANDSHAKE_TIMEOUT_S = 30.0  # give up on a handshake that never finishes
_READ_CHUNK = 65536
MAX_FINAL_FLIGHT_RESENDS = 8  # a client that keeps repeating its last flight after that is broken
_HASHES = {"sha-1": "sha1", "sha-224": "sha224", "sha-256": "sha256", "sha-384": "sha384",
           "sha-512": "sha512"}

State = Literal["new", "connecting", "connected", "failed", "closed"]


@dataclass(frozen=True)
class SrtpKeys:
    profile: int  # 0x0007 AEAD_AES_128_GCM or 0x0001 AES_CM_128_HMAC_SHA1_80
    local_key: bytes  # what this endpoint protects with
    local_salt: bytes
    remote_key: bytes  # what it unprotects with
    remote_salt: bytes


@dataclass(frozen=True)
class DtlsConnected:
    profile: int
    keys: SrtpKeys


@dataclass(frozen=True)
class DtlsFailed:
    reason: str


@dataclass(frozen=True)
class DtlsClosed:
    pass


DtlsEvent = DtlsConnected | DtlsFailed | DtlsClosed


# Certificate -> {SRTP profile tuple: shared SSL.Context}; a rotated certificate's contexts go with it.
_CONTEXTS: weakref.WeakKeyDictionary[Certificate, dict[tuple[int, ...], SSL.Context]] = (
    weakref.WeakKeyDictionary()
)


def _verify_callback(conn: SSL.Connection, cert: object, errnum: int, depth: int, ok: int) -> bool:
    endpoint = conn.get_app_data()
    if endpoint is None:  # pragma: no cover - defensive: the connection is always tagged
        return False
    return endpoint._verify(conn, cert, errnum, depth, ok)


def _context(certificate: Certificate, srtp_profiles: tuple[int, ...]) -> SSL.Context:
    """The DTLS context for `certificate` and `srtp_profiles`, built once and shared."""
    per_cert = _CONTEXTS.get(certificate)
    if per_cert is None:
        per_cert = _CONTEXTS[certificate] = {}
    ctx = per_cert.get(srtp_profiles)
    if ctx is not None:
        return ctx
    names = [SRTP_PROFILES[p][0] for p in srtp_profiles]
    if not names:
        raise ValueError("no SRTP profile")
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.set_min_proto_version(DTLS1_2_VERSION)
    ctx.set_max_proto_version(DTLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)  # shared: it must not collect every session
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_callback)
    ctx.use_certificate(certificate.cert)
    ctx.use_privatekey(certificate.key)
    ctx.set_cipher_list(CIPHER_LIST)
    ctx.set_tlsext_use_srtp(b":".join(names))
    per_cert[srtp_profiles] = ctx
    return ctx


def certificate_fingerprint(der: bytes, algorithm: str) -> str | None:
    name = _HASHES.get(algorithm.lower())
    if name is None:
        return None
    return hashlib.new(name, der).digest().hex(":").upper()


def split_records(data: bytes) -> list[bytes]:
    """Split a byte stream of DTLS records at record boundaries (RFC 6347 §4.1)."""
    records = []
    pos = 0
    while pos + RECORD_HEADER_LENGTH <= len(data):
        end = pos + RECORD_HEADER_LENGTH + int.from_bytes(data[pos + 11 : pos + 13], "big")
        records.append(data[pos:end])
        pos = end
    if pos < len(data):
        records.append(data[pos:])
    return records


def _pack_datagrams(records: list[bytes], mtu: int) -> list[bytes]:
    datagrams: list[bytes] = []
    current = b""
    for record in records:
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams


class DtlsEndpoint:
    """One DTLS-SRTP association. Inputs: start(now), receive(datagram, now),
    handle_timer(now), close(). Outputs: take_datagrams() -> list[bytes], take_events(),
    next_deadline(). `drops` counts ignored input by reason."""

    def __init__(
        self,
        certificate: Certificate,
        role: Literal["server", "client"],
        remote_fingerprints: list[tuple[str, str]],
        srtp_profiles: tuple[int, ...] = (SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80),
        *,
        now: float,
        mtu: int = DTLS_MTU,
        handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
        release_after_connect: bool | None = None,
    ) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"bad DTLS role {role!r}")
        self.role = role
        self.certificate = certificate
        self.remote_fingerprints = [(a.lower(), v.upper()) for a, v in remote_fingerprints]
        self.state: State = "new"
        self.mtu = mtu
        self.drops: collections.Counter[str] = collections.Counter()
        self.app_data_ignored = 0
        self.keys: SrtpKeys | None = None
        self._created = now
        self._handshake_deadline = now + handshake_timeout
        self._outgoing: list[bytes] = []
        self._events: list[DtlsEvent] = []
        self._last_flight: list[bytes] = []
        self._rtx_deadline: float | None = None
        self._rtx_interval = INITIAL_RETRANSMIT_S
        self._fingerprint_error: str | None = None
        # server: drop the SSL connection once connected (see the module docstring)
        self._release = role == "server" if release_after_connect is None else release_after_connect
        self._close_notify: list[bytes] = []
        self._final_flight: list[bytes] = []
        self._final_flight_resends = 0

        self._ssl: SSL.Connection | None = SSL.Connection(_context(certificate, tuple(srtp_profiles)), None)
        self._ssl.set_app_data(self)
        self._ssl.set_ciphertext_mtu(mtu)
        if role == "server":
            self._ssl.set_accept_state()
        else:
            self._ssl.set_connect_state()

    # --- inputs ---------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Client: send the ClientHello. Server: wait for one (no-op)."""
        if self.state != "new":
            return
        self.state = "connecting"
        if self.role == "client":
            self._handshake(now)

    def receive(self, data: bytes, now: float) -> str | None:
        """Feed one datagram. Returns the reason it was ignored (also counted in `drops`), or None
        when it was taken (handshake input, a repeated flight answered)."""
        if self.state in ("failed", "closed"):
            return self._drop("after-end")
        # RFC 7983: DTLS records start with a content type in 20..63
        if len(data) < RECORD_HEADER_LENGTH or not 20 <= data[0] <= 63:
            return self._drop("not-dtls")
        if self._ssl is None:
            return self._receive_released(data)
        if self.role == "server" and self._ssl.DTLSv1_get_timeout() is None and not (
            self.state == "connected" or _is_client_hello(data)
        ):
            # nothing sent yet: only a ClientHello can start the handshake; anything else
            # (stray or spoofed records) would make OpenSSL abort it
            return self._drop("before-client-hello")
        if self.state == "new":
            self.state = "connecting"
        self._ssl.bio_write(data)
        if self.state == "connecting":
            self._handshake(now)
        else:
            self._read_application(now)
        return None

    def _drop(self, reason: str) -> str:
        self.drops[reason] += 1
        return reason

    def handle_timer(self, now: float) -> None:
        if self.state != "connecting":
            return
        if now >= self._handshake_deadline:
            self._fail("handshake timeout")
            return
        if self._rtx_deadline is None or now < self._rtx_deadline:
            return
        try:
            resent = self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(f"handshake error: {_reason(exc)}")
            return
        flight = self._drain()
        if resent and flight:
            self._last_flight = flight
        elif self._last_flight:  # OpenSSL's real-time timer has not expired: resend as was
            self._outgoing.extend(self._last_flight)
        self._rtx_interval = min(self._rtx_interval * 2, MAX_RETRANSMIT_S)
        self._rtx_deadline = now + self._rtx_interval

    def close(self) -> None:
        """Queue a close_notify alert (RFC 5246 §7.2.1) and stop."""
        if self.state == "connected" and self._ssl is None:
            self._outgoing.extend(self._close_notify)  # made before the connection was released
            self._close_notify = []
        elif self.state == "connected":
            try:
                self._ssl.shutdown()
            except SSL.Error:
                pass
            self._drain()
        if self.state not in ("failed", "closed"):
            self.state = "closed"
        self._rtx_deadline = None
        self._drop_connection()

    # --- outputs --------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if self.state != "connecting":
            return None
        if self._rtx_deadline is None:
            return self._handshake_deadline
        return min(self._rtx_deadline, self._handshake_deadline)

    def take_datagrams(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def take_events(self) -> list[DtlsEvent]:
        out, self._events = self._events, []
        return out

    # --- internals ------------------------------------------------------------------------

    def _verify(self, conn: SSL.Connection, cert: object, errnum: int, depth: int, ok: int) -> bool:
        # Self-signed certificates are the norm: identity comes from the SDP fingerprint
        # (RFC 5763 §5), checked here for the peer's own certificate (depth 0).
        if depth != 0:
            return True
        try:
            der = cert.to_cryptography().public_bytes(Encoding.DER)  # type: ignore[attr-defined]
        except Exception:  # pragma: no cover - defensive: never raise inside OpenSSL
            self._fingerprint_error = "fingerprint mismatch"
            return False
        if not self._fingerprint_matches(der):
            self._fingerprint_error = "fingerprint mismatch"
            return False
        return True

    def _fingerprint_matches(self, der: bytes) -> bool:
        supported = False
        for algorithm, value in self.remote_fingerprints:
            expected = certificate_fingerprint(der, algorithm)
            if expected is None:
                continue
            supported = True
            if expected == value:
                return True
        if not supported:
            self._fingerprint_error = "no supported fingerprint"
        return False

    def _handshake(self, now: float) -> None:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            flight = self._drain()
            self._arm_retransmit(now, flight)
            return
        except SSL.Error as exc:
            self._drain()  # let the alert go out
            self._fail(self._fingerprint_error or f"handshake error: {_reason(exc)}")
            return
        flight = self._drain()
        self._connected()
        if self.state == "connected":
            self._read_application(now)  # records that came with the final flight
        if self.state == "connected" and self._release:
            self._release_connection(flight)

    def _arm_retransmit(self, now: float, flight: list[bytes]) -> None:
        if flight:
            self._last_flight = flight
            timeout = self._ssl.DTLSv1_get_timeout()
            self._rtx_interval = timeout if timeout else INITIAL_RETRANSMIT_S
            self._rtx_deadline = now + self._rtx_interval + RETRANSMIT_MARGIN_S
        else:
            timeout = self._ssl.DTLSv1_get_timeout()
            if timeout is None:
                self._rtx_deadline = None  # nothing outstanding (server waiting for a hello)
            elif self._rtx_deadline is None:
                self._rtx_deadline = now + timeout + RETRANSMIT_MARGIN_S

    def _connected(self) -> None:
        name = self._ssl.get_selected_srtp_profile()
        profile = _PROFILE_BY_NAME.get(name)
        if profile is None:
            self._fail("no common srtp profile")
            return
        _, key_len, salt_len = SRTP_PROFILES[profile]
        material = self._ssl.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (key_len + salt_len)
        )
        # RFC 5764 §4.2: client_key | server_key | client_salt | server_salt
        client_key = material[:key_len]
        server_key = material[key_len : 2 * key_len]
        client_salt = material[2 * key_len : 2 * key_len + salt_len]
        server_salt = material[2 * key_len + salt_len :]
        if self.role == "client":
            keys = SrtpKeys(profile, client_key, client_salt, server_key, server_salt)
        else:
            keys = SrtpKeys(profile, server_key, server_salt, client_key, client_salt)
        self.keys = keys
        self.state = "connected"
        self._rtx_deadline = None
        self._last_flight = []
        self._events.append(DtlsConnected(profile, keys))

    def _release_connection(self, flight: list[bytes]) -> None:
        """Keep the close_notify and the final flight as bytes; let OpenSSL's state go."""
        ssl = self._ssl
        try:
            ssl.shutdown()  # RFC 5246 §7.2.1: only queued here, sent by close()
        except SSL.Error:
            pass
        pending, self._outgoing = self._outgoing, []
        self._drain()
        self._close_notify, self._outgoing = self._outgoing, pending
        self._final_flight = flight
        ssl.set_app_data(None)
        self._ssl = None

    def _receive_released(self, data: bytes) -> str | None:
        """After the connection was released: answer a repeated client flight, ignore (and count)
        the rest: none of it can be authenticated any more."""
        content_type = data[0]
        if self.state != "connected":
            return self._drop("after-end")
        if content_type in (20, 22):  # ChangeCipherSpec / handshake: our final flight was lost
            if self._final_flight and self._final_flight_resends < MAX_FINAL_FLIGHT_RESENDS:
                self._final_flight_resends += 1
                self._outgoing.extend(self._final_flight)
                return None
            return self._drop("repeated-flight")
        if content_type == 23:
            self.app_data_ignored += 1
            return self._drop("app-data-after-release")
        if content_type == 21:  # an alert (close_notify?) that can no longer be authenticated
            return self._drop("alert-after-release")
        return self._drop("unknown-content-type")  # RFC 6347 §4.1: 24 (heartbeat) and unassigned

    def _read_application(self, now: float) -> None:
        while True:
            try:
                data = self._ssl.recv(_READ_CHUNK)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._drain()
                self.state = "closed"
                self._events.append(DtlsClosed())
                self._drop_connection()
                return
            except SSL.Error as exc:
                self._drain()
                self._fail(f"error: {_reason(exc)}")
                return
            if not data:
                break
            self.app_data_ignored += 1
        self._drain()  # e.g. a re-sent final flight when the peer's Finished came again

    def _drain(self) -> list[bytes]:
        chunks = []
        while True:
            try:
                chunk = self._ssl.bio_read(_READ_CHUNK)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return []
        datagrams = _pack_datagrams(split_records(b"".join(chunks)), self.mtu)
        self._outgoing.extend(datagrams)
        return datagrams

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self._rtx_deadline = None
        self._events.append(DtlsFailed(reason))
        self._drop_connection()

    def _drop_connection(self) -> None:
        """An ended endpoint lets its `SSL.Connection` go at once. The connection refers back to
        the endpoint (its app data, for the verify callback), so kept it would form a cycle that
        only the garbage collector frees, OpenSSL's native state (tens of kB) with it: with the
        collector tuned down for the media loop (`sfu serve`), that was memory never returned."""
        if self._ssl is not None:
            self._ssl.set_app_data(None)
            self._ssl = None


def _is_client_hello(data: bytes) -> bool:
    """A handshake record of epoch 0 carrying a ClientHello (RFC 6347 §4.1, §4.2.2)."""
    return (
        len(data) >= RECORD_HEADER_LENGTH + 12
        and data[0] == 22
        and data[3:5] == b"\x00\x00"
        and data[RECORD_HEADER_LENGTH] == 1
    )


def _reason(exc: SSL.Error) -> str:
    try:
        return "; ".join(str(item[2] if len(item) > 2 else item) for item in exc.args[0])
    except (IndexError, TypeError):
        return str(exc) or type(exc).__name__
