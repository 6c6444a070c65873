"""DTLS client role and SRTP contexts for the test clients, behind small adapters.

`make_dtls_client` builds `sfu.core.dtls.DtlsEndpoint(role="client")` (pyOpenSSL; nothing
server-specific). `make_srtp` prefers `sfu._fastpath.SrtpContext` and falls back to
pylibsrtp behind the same four methods.
"""

from __future__ import annotations

from typing import Protocol

from sfu.core.certificate import Certificate
from sfu.core.dtls import DtlsEndpoint

# SDP-ish names accepted in the clients' `srtp_profiles`
PROFILE_ALIASES = {
    "AEAD_AES_128_GCM": "SRTP_AEAD_AES_128_GCM",
    "AES_CM_128_HMAC_SHA1_80": "SRTP_AES128_CM_SHA1_80",
    "SRTP_AEAD_AES_128_GCM": "SRTP_AEAD_AES_128_GCM",
    "SRTP_AES128_CM_SHA1_80": "SRTP_AES128_CM_SHA1_80",
}
PROFILE_IDS = {"SRTP_AES128_CM_SHA1_80": 1, "SRTP_AEAD_AES_128_GCM": 7}  # RFC 5764 / 7714


def profile_name(profile: object) -> str:
    """Normalise a profile given as an RFC id, bytes or any of the usual names."""
    if isinstance(profile, int):
        for name, ident in PROFILE_IDS.items():
            if ident == profile:
                return name
        raise ValueError(f"unknown SRTP profile id {profile}")
    if isinstance(profile, bytes):
        profile = profile.decode()
    name = str(getattr(profile, "name", profile))
    return PROFILE_ALIASES.get(name, name)


def make_dtls_client(
    certificate: Certificate, remote_fingerprints: list[tuple[str, str]],
    profiles: list[str], now: float,
) -> DtlsEndpoint:
    """A DTLS client endpoint offering `profiles` (names, in preference order)."""
    return DtlsEndpoint(
        certificate, "client", remote_fingerprints,
        tuple(PROFILE_IDS[profile_name(p)] for p in profiles), now=now,
    )


# ---------------------------------------------------------------------------------------
# SRTP


class SrtpLike(Protocol):
    def protect(self, packet: bytes) -> bytes: ...
    def unprotect(self, packet: bytes) -> bytes: ...
    def protect_rtcp_packet(self, packet: bytes) -> bytes: ...
    def unprotect_rtcp_packet(self, packet: bytes) -> bytes: ...


REPLAY_WINDOW = 1024  # packets: late retransmissions must still pass the replay check


class _PylibsrtpContext:
    """pylibsrtp behind the `_fastpath.SrtpContext` surface (one direction per object)."""

    def __init__(self, profile: str, master_key: bytes, master_salt: bytes, *, outbound: bool) -> None:
        import pylibsrtp

        ids = {
            "SRTP_AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
            "SRTP_AES128_CM_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        }
        policy = pylibsrtp.Policy(
            key=master_key + master_salt,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=ids[profile],
        )
        policy.window_size = REPLAY_WINDOW
        policy.allow_repeat_tx = True
        session = pylibsrtp.Session(policy)
        self.protect = session.protect
        self.unprotect = session.unprotect
        self.protect_rtcp_packet = session.protect_rtcp
        self.unprotect_rtcp_packet = session.unprotect_rtcp


def make_srtp(profile: str, key: bytes, salt: bytes, *, outbound: bool) -> SrtpLike:
    try:
        from sfu._fastpath import SrtpContext  # type: ignore[attr-defined]
    except ImportError:
        return _PylibsrtpContext(profile, key, salt, outbound=outbound)
    return SrtpContext(PROFILE_IDS[profile], key, salt)  # type: ignore[no-any-return]
