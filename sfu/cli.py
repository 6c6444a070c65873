"""The `sfu` command: `sfu serve` runs the server, `sfu token` mints a participant token.

Subcommands register themselves on the argparse sub-parsers and set `func(args) -> int` as their
default; `main` returns that exit code. A bad flag or configuration exits 2 with one line on stderr,
never a traceback. `sfu bench` is contributed by `sfu.bench.cli.add_parser(subparsers)` when that
module exists (it must follow the same `func` convention).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import __version__
from .config import LOG_FORMATS, LOG_LEVELS, Config, ConfigError, load_config, resolve_token_secret
from .keys import KeySet, describe
from .tokens import DEFAULT_TTL_S, mint, parse_ttl

log = logging.getLogger("sfu")

OBS_STREAM = "live"  # the stream name shown in the start-up banner
WEB_DIR = Path(__file__).resolve().parent / "web"  # as served by sfu.io.http (not imported: `sfu token` stays light)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfu",
        description="A self-hosted WebRTC SFU: publish over WHIP (OBS, GStreamer, browsers), watch over WHEP.",
        epilog="Configuration: a TOML file (--config or $SFU_CONFIG), then SFU_<NAME> variables, then flags.",
    )
    parser.add_argument("--version", action="version", version=f"sfu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the server",
        description="Run the server until SIGINT (stop at once) or SIGTERM (drain: no new sessions, the open "
        "ones run on until they end or --drain-timeout passes, then exit 0; a second SIGTERM stops at once).",
    )
    _add_config_flag(serve)
    serve.add_argument("--http-host", metavar="H", help="HTTP listen address (default 0.0.0.0)")
    serve.add_argument("--http-port", metavar="P", type=_port, help="HTTP port (default 8080; 0 = ephemeral)")
    serve.add_argument(
        "--udp-port", metavar="P", type=_port, help="the one UDP media port (default 8443; 0 = ephemeral)"
    )
    serve.add_argument(
        "--udp-host",
        metavar="H",
        help="UDP media bind address (default 0.0.0.0: every address, IPv6 too unless udp_ipv6 = false; "
        "each peer is answered from the address it sent to)",
    )
    serve.add_argument(
        "--public-ip",
        metavar="IP",
        action="append",
        dest="public_ips",
        help="address to advertise to clients (repeatable; default: the interfaces' addresses)",
    )
    serve.add_argument("--token-secret", metavar="S", help="token signing secret (default: the secret file)")
    serve.add_argument(
        "--viewer-token-required",
        action="store_true",
        default=None,
        help="require a subscribe token for WHEP (default: viewing is open)",
    )
    serve.add_argument("--max-sessions", metavar="N", type=_non_negative, help="session limit (0 = none)")
    serve.add_argument("--max-unconnected-per-source", metavar="N", type=_non_negative,
                       help="WHEP sessions waiting for their first ICE check, per client address (default 128; 0 = no bound)")
    serve.add_argument("--max-unconnected", metavar="N", type=_non_negative,
                       help="WHEP sessions waiting for their first ICE check, in total (default 1024; 0 = no bound)")
    serve.add_argument("--http-header-timeout", metavar="S", type=float, dest="http_header_timeout_s",
                       help="seconds a client has to send a request's headers (default 10)")
    serve.add_argument("--http-body-timeout", metavar="S", type=float, dest="http_body_timeout_s",
                       help="seconds a client has to send a request's body (default 10)")
    serve.add_argument("--max-http-connections", metavar="N", type=_non_negative,
                       help="open HTTP connections at most (default 0: from the open-files limit)")
    serve.add_argument(
        "--no-keyframe-cache",
        dest="keyframe_cache",
        action="store_false",
        default=None,
        help="do not start new viewers from the last keyframe (they wait for the publisher's next one)",
    )
    serve.add_argument(
        "--no-gso",
        dest="udp_gso",
        action="store_false",
        default=None,
        help="send every media packet as its own datagram (no UDP GSO; without this flag GSO is "
        "still skipped for a viewer whose path the kernel refused it for)",
    )
    serve.add_argument(
        "--overload-queue-delay-ms",
        metavar="MS",
        type=float,
        help="media waiting longer than this in the UDP socket (sustained) lowers every viewer's video "
        "layer until the wait is gone (default 30; 0 = off)",
    )
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="log level (default info)")
    serve.add_argument(
        "--log-format", choices=LOG_FORMATS, help="text lines, or one JSON object per line (default text)"
    )
    serve.add_argument(
        "--drain-timeout",
        metavar="S",
        type=float,
        help="on SIGTERM, stop taking sessions and let the open ones run this long before closing them "
        "(default 30; a second SIGTERM stops at once)",
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve HTTPS (with --tls-key)")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key for --tls-cert")
    serve.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="also serve /metrics here without a credential (on the main port it needs an admin token)",
    )
    serve.add_argument(
        "--webhook-url", metavar="URL", action="append", dest="webhook_urls",
        help="POST lifecycle events here, signed (Standard Webhooks; repeatable; needs --webhook-secret)",
    )
    serve.add_argument("--webhook-secret", metavar="S", help='webhook signing secret ("whsec_<base64>" or any text)')
    serve.add_argument(
        "--no-webhook-viewer-events", dest="webhook_viewer_events", action="store_false", default=None,
        help="send no viewer.joined / viewer.left webhooks (big shows)",
    )
    serve.set_defaults(func=_cmd_serve)
    SUBCOMMANDS["serve"] = serve

    token = sub.add_parser(
        "token",
        help="print a participant token",
        description="Print a token signed with the server's secret (--secret, the configuration or the secret file).",
    )
    token.add_argument("--stream", metavar="NAME", required=True, help='stream name or pattern ("shop-*", "*")')
    token.add_argument("--publish", action="store_true", help="allow publishing (WHIP)")
    token.add_argument("--subscribe", action="store_true", help="allow watching (WHEP)")
    token.add_argument(
        "--admin", action="store_true", help='allow the admin API, /api/stats and /metrics (needs --stream "*")'
    )
    token.add_argument(
        "--ttl", metavar="DURATION", default="12h", help="lifetime: 3600, 30m, 12h, 14d at most (default 12h)"
    )
    token.add_argument("--participant", metavar="ID", help="participant id (default: random)")
    _add_config_flag(token)
    token.add_argument(
        "--token-secret",
        "--secret",
        dest="secret",
        metavar="S",
        help="signing secret, as `sfu serve --token-secret` (default: as the server finds it)",
    )
    token.set_defaults(func=_cmd_token)
    SUBCOMMANDS["token"] = token

    _add_bench(sub)
    return parser


SUBCOMMANDS: dict[str, argparse.ArgumentParser] = {}  # for an unknown flag: that subcommand's usage


def _add_bench(sub: Any) -> None:
    try:
        from .bench import cli as bench_cli  # type: ignore[attr-defined,unused-ignore]
    except ModuleNotFoundError as e:
        if e.name in ("sfu.bench", "sfu.bench.cli"):
            return  # not installed: no `sfu bench`
        print(f"sfu: warning: `sfu bench` unavailable: {e}", file=sys.stderr)
        return
    except ImportError as e:
        print(f"sfu: warning: `sfu bench` unavailable: {e}", file=sys.stderr)
        return
    bench_cli.add_parser(sub)


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", default=os.environ.get("SFU_CONFIG"), help="TOML configuration file ($SFU_CONFIG)"
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # say it with the subcommand's usage, not the top level's
            SUBCOMMANDS.get(getattr(args, "command", ""), parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as e:  # --help, --version, or a usage error (already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as e:
        print(f"sfu: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# -- sfu token ---------------------------------------------------------------------------------------


def _cmd_token(args: argparse.Namespace) -> int:
    if not (args.publish or args.subscribe or args.admin):
        print("sfu token: error: give --publish, --subscribe, --admin or a combination", file=sys.stderr)
        return 2
    try:
        ttl = parse_ttl(args.ttl)
    except ValueError as e:
        print(f"sfu token: error: --ttl: {e}", file=sys.stderr)
        return 2
    config = load_config(args.config, os.environ, {"token_secret": args.secret})
    secret, created = resolve_token_secret(config)
    if created:
        print(f"sfu token: created a new token secret in {config.token_secret_file}", file=sys.stderr)
    try:
        keys = KeySet.from_config(secret, config.token_keys)
        token = keys.mint(args.stream, args.publish, args.subscribe, args.admin, ttl, participant=args.participant)
    except ValueError as e:
        print(f"sfu token: error: {e}", file=sys.stderr)
        return 2
    print(token)
    sub, jti, kid = describe(token)  # what `POST /admin/revoke` takes to revoke it
    print(f"sfu token: participant {sub}, token id {jti}, signing key {kid}", file=sys.stderr)
    return 0


# -- sfu serve ---------------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    overrides = {
        "http_host": args.http_host,
        "http_port": args.http_port,
        "udp_port": args.udp_port,
        "udp_host": args.udp_host,
        "public_ips": args.public_ips,
        "token_secret": args.token_secret,
        "viewer_token_required": args.viewer_token_required,
        "max_sessions": args.max_sessions,
        "max_unconnected_per_source": args.max_unconnected_per_source,
        "max_unconnected": args.max_unconnected,
        "http_header_timeout_s": args.http_header_timeout_s,
        "http_body_timeout_s": args.http_body_timeout_s,
        "max_http_connections": args.max_http_connections,
        "keyframe_cache": args.keyframe_cache,
        "udp_gso": args.udp_gso,
        "overload_queue_delay_ms": args.overload_queue_delay_ms,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "drain_timeout": args.drain_timeout,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "metrics_listen": args.metrics_listen,
        "webhook_urls": args.webhook_urls,
        "webhook_secret": args.webhook_secret,
        "webhook_viewer_events": args.webhook_viewer_events,
    }
    config = load_config(args.config, os.environ, overrides)
    secret, created = resolve_token_secret(config)
    config = dataclasses.replace(config, token_secret=secret)  # the server and the banner share it
    setup_logging(config.log_level, config.log_format)
    if created:
        log.info("created a new token secret in %s", config.token_secret_file)
    try:
        from .app import Server  # lazy: `sfu token` and `--help` need none of the media stack
    except ImportError as e:
        print(f"sfu serve: error: the server is not available: {e}", file=sys.stderr)
        return 1
    try:
        return _run_event_loop(_serve(config, Server, lambda: load_config(args.config, os.environ, overrides)))
    except OSError as e:  # typically a port already in use
        print(f"sfu serve: error: {e}", file=sys.stderr)
        return 1


def _run_event_loop(main: Any) -> int:
    """Run `main` on uvloop when it is installed (less event-loop overhead per wake-up), else on
    asyncio's default loop. Only `sfu serve` does this; an embedded `sfu.Server` runs on whatever
    loop its host chose."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _settle_garbage_collector() -> None:
    """After start-up: move everything alive into the permanent generation and collect less often.

    The server allocates few cyclic objects per packet but many long-lived ones per session; full
    collections over them were measurable pauses on the media loop. Only the `sfu serve` process
    does this, never an embedding one."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def _serve(config: Config, server_cls: Any, reload: Any = None) -> int:
    """Run until SIGINT (stop now), a second SIGTERM (stop now) or the end of a drain: the first
    SIGTERM, or `POST /admin/drain`, starts one (sfu/io/drain.py); exit 0 either way. SIGHUP reads
    the configuration again (`reload()`) and takes its token keys (docs/admin.md "Key rotation")."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    started: list[Any] = []
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def on_sigterm() -> None:
        drainable = started and hasattr(started[0], "begin_drain")
        if drainable and started[0].begin_drain(reason="SIGTERM"):
            log.info("SIGTERM: draining (a second SIGTERM stops at once)")
        else:
            stop.set()

    def on_sighup() -> None:
        keys = getattr(started[0], "keys", None) if started else None
        if reload is None or keys is None:
            return
        try:
            fresh = reload()
            kids = keys.replace(KeySet.from_config(resolve_token_secret(fresh)[0], fresh.token_keys))
        except (ConfigError, ValueError) as e:
            log.error("SIGHUP: configuration not reloaded, token keys unchanged: %s", e)
            return
        log.info("SIGHUP: token keys now %s (the first signs)", ", ".join(kids))

    for sig, handler in ((signal.SIGINT, stop.set), (signal.SIGTERM, on_sigterm), (signal.SIGHUP, on_sighup)):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows' loop
            loop.add_signal_handler(sig, handler)
    try:
        async with server_cls(config) as server:
            started.append(server)
            print(banner(server, config), flush=True)
            _settle_garbage_collector()
            forever = asyncio.create_task(server.serve_forever())
            stopping = asyncio.create_task(stop.wait())
            drain = getattr(server, "drain", None)  # an embedder's stand-in may have none
            drained = asyncio.create_task(drain.done.wait() if drain is not None else asyncio.Event().wait())
            await asyncio.wait({forever, stopping, drained}, return_when=asyncio.FIRST_COMPLETED)
            for task in (forever, stopping, drained):
                task.cancel()
            await asyncio.gather(forever, stopping, drained, return_exceptions=True)
            if forever.done() and not forever.cancelled() and forever.exception() is not None:
                raise forever.exception()  # type: ignore[misc]
            log.info("stopping")
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    return 0


def setup_logging(level: str, fmt: str) -> None:
    from .logging_setup import configure  # noqa: PLC0415 - only `sfu serve` logs

    configure(level, fmt)


def banner(server: Any, config: Config) -> str:
    """What an OBS user needs: the WHIP URL per advertised address, a publish token, where to watch."""
    http = urlsplit(server.http_url)
    port = http.port or (443 if http.scheme == "https" else 80)
    if config.public_url:
        bases = [config.public_url.rstrip("/")]
    else:
        bases = [f"{http.scheme}://{_host_for_url(addr)}:{port}" for addr in advertised_addresses(server, config)]
    secret = getattr(server, "token_secret", None) or config.token_secret or ""
    keys = getattr(server, "keys", None)
    if keys is not None:
        token = keys.mint("*", publish=True, ttl_s=DEFAULT_TTL_S)
    else:
        token = mint(secret, "*", publish=True, subscribe=False, ttl_s=DEFAULT_TTL_S)
    watch_page = (WEB_DIR / "watch.html").is_file()
    lines = [
        f"sfu {__version__}: HTTP on {server.http_url}, media on UDP port {server.udp_port}",
        "",
        "Publish from OBS Studio (Settings > Stream > Service: WHIP):",
        *(f"  Server:       {base}/whip/{OBS_STREAM}" for base in bases),
        f"  Bearer Token: {token}",
        "                (any stream, publish only, valid 12 h; `sfu token` mints more)",
        "",
        "Watch:",
        *(f"  WHEP:         {base}/whep/{OBS_STREAM}" for base in bases),
        *(f"  Page:         {base}/static/watch.html?stream={OBS_STREAM}" for base in bases[:1] if watch_page),
        "",
        "Operate (docs/admin.md): `sfu token --admin --stream '*' --ttl 1h` mints the token that",
        "  /admin/..., /api/stats and /metrics need; SIGTERM drains, a second SIGTERM stops at once.",
    ]
    return "\n".join(lines)


def advertised_addresses(server: Any, config: Config) -> list[str]:
    """Where clients reach the HTTP port: `public_ips`, a specific `http_host`, else the addresses the
    server advertises for media (its interface discovery), else the host of its URL."""
    if config.public_ips:
        return list(config.public_ips)
    if config.http_host not in ("0.0.0.0", "::", ""):
        return [config.http_host]
    from_server = getattr(server, "advertised_addresses", None)
    if from_server:
        return list(from_server)
    return [urlsplit(server.http_url).hostname or "127.0.0.1"]


def _host_for_url(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr
