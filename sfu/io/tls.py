"""Listening sockets' edges: the TLS context for HTTPS, bind errors that name the port, and the
separate credential-free `/metrics` listener (`metrics_listen`).

Browsers on other hosts only publish from a secure context (getUserMedia needs one), and OBS accepts
https WHIP URLs: with `tls_cert` / `tls_key` the one HTTP port serves WHIP, WHEP, the pages and the
API over TLS (TLS 1.2 or later, Python's default server ciphers).
"""

from __future__ import annotations

import errno
import ssl

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..config import ConfigError

FLAGS = {"HTTP": "--http-port", "UDP media": "--udp-port", "metrics": "--metrics-listen"}


def server_ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """None without a certificate; else a server context, or `ConfigError` naming the file."""
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as e:
        raise ConfigError(f"tls: no such file: {e.filename}") from None
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"tls: cannot use certificate {cert} with key {key}: {e}") from None
    return context


def bind_error(error: OSError, what: str, host: str, port: int) -> OSError:
    """`error` reworded to say which port could not be bound and which flag changes it."""
    flag = FLAGS.get(what, "")
    if error.errno == errno.EADDRINUSE:
        text = f"{what} port {port} on {host or '*'} is already in use (another sfu running? {flag} picks another)"
    elif error.errno == errno.EACCES:
        text = f"{what} port {port} on {host or '*'}: permission denied (ports below 1024 need privileges)"
    else:
        text = f"{what} port {port} on {host or '*'}: {error.strerror or error}"
    return OSError(error.errno, text)


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """Only `GET /metrics`, open: for a listen address that only the monitoring network reaches."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


__all__ = ["bind_error", "metrics_app", "server_ssl_context"]
