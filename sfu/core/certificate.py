"""DTLS certificates: self-signed ECDSA P-256, with a store that renews before expiry.

aiortc's helper makes 30-day certificates; a long-running server needs its own lifetime
and rotation. Inputs: `now_wall` (Unix seconds; certificates are about wall-clock time).
Outputs: `Certificate` values. New sessions get the store's current certificate; old
sessions keep the one they started with.
"""

from __future__ import annotations

import datetime
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import crypto

BACKDATE_S = 86400.0  # notBefore a day in the past: peers with a slow clock still accept it
DAY_S = 86400.0


def _fingerprint(cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(algorithm))


class Certificate:
    """A key pair and its self-signed certificate, in both `cryptography` and pyOpenSSL forms."""

    def __init__(
        self, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cert: x509.Certificate
    ) -> None:
        self.key = key
        self.cert = cert
        self.pyopenssl_cert = crypto.X509.from_cryptography(cert)
        self.pyopenssl_key = crypto.PKey.from_cryptography_key(key)
        self.not_after: float = cert.not_valid_after_utc.timestamp()
        self.not_before: float = cert.not_valid_before_utc.timestamp()
        self._fingerprint_sha256: str | None = None

    @classmethod
    def generate(
        cls, now_wall: float, lifetime_days: float = 365, *, rsa_bits: int | None = None
    ) -> Certificate:
        """Self-signed, random CN, valid from a day before `now_wall` for `lifetime_days`.

        ECDSA P-256 by default; `rsa_bits` makes an RSA one (as GStreamer's webrtcbin uses).
        """
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        if rsa_bits:
            key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, secrets.token_hex(16))])
        start = datetime.datetime.fromtimestamp(now_wall - BACKDATE_S, datetime.UTC)
        end = datetime.datetime.fromtimestamp(
            now_wall + lifetime_days * DAY_S, datetime.UTC
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def fingerprint_sha256(self) -> str:
        """"AB:CD:..." as written in SDP `a=fingerprint:sha-256` (RFC 8122 §5); computed once."""
        fingerprint = self._fingerprint_sha256
        if fingerprint is None:
            fingerprint = self._fingerprint_sha256 = _fingerprint(self.cert, hashes.SHA256())
        return fingerprint

    def fingerprints(self) -> list[tuple[str, str]]:
        return [("sha-256", self.fingerprint_sha256())]


class CertificateStore:
    """Hands out the current certificate, generating a new one when the current one is
    within `renew_before_days` of expiry."""

    def __init__(self, lifetime_days: float = 365, renew_before_days: float = 30) -> None:
        if renew_before_days >= lifetime_days:
            raise ValueError("renew_before_days must be shorter than lifetime_days")
        self.lifetime_days = lifetime_days
        self.renew_before_days = renew_before_days
        self._current: Certificate | None = None
        self.generated = 0

    def current(self, now_wall: float) -> Certificate:
        cert = self._current
        if cert is None or now_wall >= cert.not_after - self.renew_before_days * DAY_S:
            cert = Certificate.generate(now_wall, self.lifetime_days)
            self._current = cert
            self.generated += 1
        return cert
