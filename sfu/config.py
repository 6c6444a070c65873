"""Server configuration: one dataclass, loaded from a TOML file, then `SFU_*` variables, then CLI flags.

`load_config(path, env, overrides)` applies the three layers in that order (later wins) and checks
every value: an unknown key, a wrong type or an out-of-range number raises `ConfigError` naming
where the value came from, the key and what was expected. Constructing `Config(...)` directly does not
validate (tests and embedders are trusted); call `config.validate()` to check one built by hand.

Secrets: when `token_secret` is not set, `resolve_token_secret` reads `token_secret_file`, creating it
(mode 0600, a random secret) on first use, so `sfu serve` and `sfu token` agree without set-up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "SFU_"
DEFAULT_TOKEN_SECRET_FILE = "~/.local/state/sfu/token-secret"
SYSTEM_STATE_DIR = Path("/var/lib/sfu")  # a service install's state (systemd StateDirectory=sfu)
PUBLISH_KEYS_NAME = "publish-keys.json"


def default_token_secret_file() -> Path:
    """`/var/lib/sfu/token-secret` where that folder exists (a service install: the server and
    every `sfu token`, whoever runs it, use the same secret), else the user's own
    `~/.local/state/sfu/token-secret`."""
    if SYSTEM_STATE_DIR.is_dir():
        return SYSTEM_STATE_DIR / "token-secret"
    return Path(DEFAULT_TOKEN_SECRET_FILE)

MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash output
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(Exception):
    """A configuration value is unknown, mistyped or out of range; the message says which and where."""


@dataclass
class Config:
    """Everything `sfu serve` needs; field names are the TOML keys and the `SFU_<NAME>` variables."""

    http_host: str = "0.0.0.0"
    http_port: int = 8080
    udp_host: str = "0.0.0.0"  # media bind address; a wildcard answers each peer from the address it sent to
    udp_ipv6: bool = True  # also bind `::` (dual-stack) when the host has IPv6
    udp_port: int = 8443  # one UDP port for all media; 0 = ephemeral
    public_ips: list[str] = field(default_factory=list)  # advertised; empty = discover interfaces
    discover_interfaces: bool = True
    include_loopback: bool | None = None  # None = only when no other address exists
    token_secret: str | None = field(default=None, repr=False)  # kept out of logs
    token_secret_file: Path = field(default_factory=default_token_secret_file)
    # encoders' long-lived publish keys (hashed); None: beside token_secret_file, or in memory
    # when token_secret is given inline (sfu/publish_keys.py)
    publish_keys_file: Path | None = None
    viewer_token_required: bool = False
    max_sessions: int = 0  # 0 = no limit
    max_viewers_per_stream: int = 0  # 0 = no limit
    whep_wait_for_publisher: bool = False
    whep_wait_timeout: float = 30.0
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    cors_origin: str = "*"
    max_body_bytes: int = 65536
    public_url: str | None = None  # base of absolute Location URLs; None = from a valid Host (io/http.py)
    log_level: str = "info"
    cert_lifetime_days: int = 365
    keyframe_cache: bool = True  # start new viewers from each layer's last keyframe (off: wait for one)
    udp_gso: bool = True  # send runs of equal-size packets to one viewer as one UDP GSO send (Linux)
    # media waiting longer than this in the UDP socket (sustained) means the server cannot keep up:
    # it lowers the video layers it sends until the wait is gone (sfu/core/overload.py); 0 = off
    overload_queue_delay_ms: float = 30.0
    # signing keys with ids, [{kid = "...", secret = "..."}], the first signs; token_secret stays
    # a verifying key (kid "default") until removed (sfu/keys.py, docs/admin.md "Key rotation")
    token_keys: list[dict[str, Any]] = field(default_factory=list, repr=False)
    drain_timeout: float = 30.0  # SIGTERM / POST /admin/drain: seconds sessions may run on (sfu/io/drain.py)
    log_format: str = "text"  # "text" or "json" (one JSON object per line, sfu/logging_setup.py)
    tls_cert: str | None = None  # PEM certificate chain: serve HTTP over TLS (with tls_key)
    tls_key: str | None = None  # PEM private key of tls_cert
    metrics_listen: str | None = None  # "host:port": also serve /metrics there, without a credential
    # webhooks (sfu/io/webhooks.py): POSTed to each URL, signed with the secret (Standard Webhooks)
    webhook_urls: list[str] = field(default_factory=list)
    webhook_secret: str | None = field(default=None, repr=False)  # "whsec_<base64>" or any text; kept out of logs
    webhook_viewer_events: bool = True  # viewer.joined / viewer.left (off for big shows)
    webhook_queue_size: int = 1000  # events waiting for delivery; beyond it new events are dropped (counted)
    metrics_stream_labels: int = 0  # /metrics: per-stream gauges for this many most-watched streams (0 = none)
    # floods (docs/security.md "Floods and leaks"): WHEP sessions waiting for their first ICE check,
    # per client address and in total (0 = no bound), and how long they may wait (sfu/core/admission.py)
    max_unconnected_per_source: int = 128
    max_unconnected: int = 1024
    unconnected_timeout_s: float = 10.0
    # slow HTTP clients (sfu/io/http_guard.py): request headers and bodies must arrive within these,
    # and at most this many HTTP connections are open (0 = from the open-files limit)
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 10.0
    max_http_connections: int = 0

    @classmethod
    def for_tests(cls) -> Config:
        """Loopback, ephemeral ports, an in-memory random secret (no file), advertised 127.0.0.1."""
        return cls(
            http_host="127.0.0.1",
            http_port=0,
            udp_host="127.0.0.1",
            udp_ipv6=False,
            udp_port=0,
            public_ips=["127.0.0.1"],
            discover_interfaces=False,
            include_loopback=True,
            token_secret=secrets.token_urlsafe(32),
        )

    def validate(self, origins: Mapping[str, str] | None = None) -> None:
        """Raise `ConfigError` for the first value out of range (types are checked while loading).

        `origins` maps a field name to where its value came from (a file, `SFU_X`, "command line")."""

        def fail(name: str, expected: str) -> ConfigError:
            where = (origins or {}).get(name, "config")
            return ConfigError(f"{where}: {name} must be {expected}, got {getattr(self, name)!r}")

        for name in ("http_port", "udp_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise fail(name, "a port number 0-65535")
        for name in ("max_sessions", "max_viewers_per_stream"):
            if getattr(self, name) < 0:
                raise fail(name, ">= 0 (0 = no limit)")
        for name in ("max_unconnected_per_source", "max_unconnected", "max_http_connections"):
            if getattr(self, name) < 0:
                raise fail(name, ">= 0 (0 = no bound)" if name != "max_http_connections" else ">= 0 (0 = automatic)")
        for name in ("unconnected_timeout_s", "http_header_timeout_s", "http_body_timeout_s"):
            if not 0 < getattr(self, name) <= 3600:
                raise fail(name, "in (0, 3600] seconds")
        if self.max_body_bytes < 1024:
            raise fail("max_body_bytes", ">= 1024")
        if not self.whep_wait_timeout > 0:
            raise fail("whep_wait_timeout", "> 0 seconds")
        if not 0 <= self.overload_queue_delay_ms <= 10_000:
            raise fail("overload_queue_delay_ms", "0 (off) .. 10000 milliseconds")
        if self.cert_lifetime_days < 1:
            raise fail("cert_lifetime_days", ">= 1")
        if self.log_level not in LOG_LEVELS:
            raise fail("log_level", f"one of {', '.join(LOG_LEVELS)}")
        if self.token_secret is not None and len(self.token_secret.encode()) < MIN_SECRET_BYTES:
            where = (origins or {}).get("token_secret", "config")
            raise ConfigError(  # the value itself stays out of the message
                f"{where}: token_secret must be at least {MIN_SECRET_BYTES} bytes "
                f"(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        _check_ops(self, fail, origins or {})
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise fail("public_url", "an http:// or https:// URL")
        if any(not ip or any(c.isspace() for c in ip) for ip in self.public_ips):
            raise fail("public_ips", "a list of non-empty addresses")
        if any(not u.startswith(("http://", "https://")) for u in self.webhook_urls):
            raise fail("webhook_urls", "a list of http:// or https:// URLs")
        if self.webhook_urls and not self.webhook_secret:
            raise ConfigError(f"{(origins or {}).get('webhook_urls', 'config')}: webhook_urls needs a webhook_secret")
        if not 0 <= self.metrics_stream_labels <= 1000:
            raise fail("metrics_stream_labels", "0 (none) .. 1000")
        if self.webhook_queue_size < 1:
            raise fail("webhook_queue_size", ">= 1")
        for i, server in enumerate(self.ice_servers):
            _check_ice_server(server, f"{(origins or {}).get('ice_servers', 'config')}: ice_servers[{i}]")


def _check_ops(config: Config, fail: Any, origins: Mapping[str, str]) -> None:
    """token_keys, drain_timeout, log_format, tls_cert/tls_key and metrics_listen."""
    where = origins.get("token_keys", "config")
    kids = set()
    for i, key in enumerate(config.token_keys):
        kid, secret = key.get("kid"), key.get("secret")
        if set(key) != {"kid", "secret"} or not isinstance(kid, str) or not isinstance(secret, str):
            raise ConfigError(f"{where}: token_keys[{i}] must have exactly the string keys kid and secret")
        if not kid or len(kid) > 64 or not all(c.isalnum() or c in "._-" for c in kid) or kid in kids:
            raise ConfigError(f"{where}: token_keys[{i}]: kid must be 1-64 of A-Z a-z 0-9 . _ - and unique")
        kids.add(kid)
        if len(secret.encode()) < MIN_SECRET_BYTES:  # the value itself stays out of the message
            raise ConfigError(f"{where}: token_keys[{i}] ({kid}): secret must be at least {MIN_SECRET_BYTES} bytes")
    if not 0 <= config.drain_timeout <= 86400:
        raise fail("drain_timeout", "0-86400 seconds")
    if config.log_format not in LOG_FORMATS:
        raise fail("log_format", f"one of {', '.join(LOG_FORMATS)}")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise fail("tls_cert", "given together with tls_key")
    if config.metrics_listen is not None:
        host, sep, port = config.metrics_listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise fail("metrics_listen", "HOST:PORT (e.g. 127.0.0.1:9100)")


def _check_ice_server(server: Mapping[str, Any], where: str) -> None:
    unknown = set(server) - {"urls", "username", "credential"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected urls, username, credential")
    urls = server.get("urls")
    url_list = [urls] if isinstance(urls, str) else urls
    if not isinstance(url_list, list) or not url_list or not all(isinstance(u, str) and u for u in url_list):
        raise ConfigError(f"{where}: urls must be a URL string or a non-empty list of URL strings")
    for url in url_list:
        if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
            raise ConfigError(f"{where}: {url!r} is not a stun:, stuns:, turn: or turns: URL")
    for key in ("username", "credential"):
        if key in server and not isinstance(server[key], str):
            raise ConfigError(f"{where}: {key} must be a string")
    if ("username" in server) != ("credential" in server):
        raise ConfigError(f"{where}: username and credential go together")


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)


def _type_name(hint: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        Path: "a path string",
        str | None: "a string",
        bool | None: "true or false",
        list[str]: "a list of strings",
        list[dict[str, Any]]: "a list of tables",
    }.get(hint, str(hint))


def _coerce(name: str, value: Any, where: str) -> Any:
    """Check a value that arrived typed (TOML or a CLI override) against the field's type."""
    hint = _HINTS[name]
    base = _strip_optional(hint)
    if value is None and base is not hint:
        return None
    ok: bool
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is str:
        ok = isinstance(value, str)
    elif base is Path:
        ok = isinstance(value, str | Path)
        value = Path(value) if ok else value
    elif base == list[str]:
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        value = list(value) if ok else value
    elif base == list[dict[str, Any]]:
        ok = isinstance(value, list | tuple) and all(isinstance(v, Mapping) for v in value)
        value = [dict(v) for v in value] if ok else value
    else:  # pragma: no cover - a field type this loader does not know
        raise AssertionError(f"unhandled config type {hint} for {name}")
    if not ok:
        raise ConfigError(f"{where}: {name} must be {_type_name(hint)}, got {type(value).__name__} {value!r}")
    return value


def _strip_optional(hint: Any) -> Any:
    if isinstance(hint, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _parse_env(name: str, text: str, where: str) -> Any:
    """Turn an `SFU_<NAME>` string into the field's type (lists comma-separated, ice_servers JSON)."""
    hint = _HINTS[name]
    base = _strip_optional(hint)
    if base is not hint and text.strip() == "":
        return None
    try:
        if base is bool:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if base is int:
            return int(text.strip())
        if base is float:
            return float(text.strip())
        if base == list[str]:
            return [part.strip() for part in text.split(",") if part.strip()]
        if base == list[dict[str, Any]]:
            return json.loads(text)
    except (ValueError, json.JSONDecodeError):
        expected = "a JSON list of objects" if base == list[dict[str, Any]] else _type_name(hint)
        raise ConfigError(f"{where}: expected {expected}, got {text!r}") from None
    return text


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """File, then `SFU_<NAME>` variables of `env`, then `overrides` (entries set to None are ignored).

    Unknown `SFU_*` variables are ignored (other tools share the prefix, e.g. `SFU_CONFIG`); unknown
    keys in the file or in `overrides` are errors.
    """
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        for key, value in data.items():
            if key not in _FIELDS:
                raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(_FIELDS)})")
            values[key] = _coerce(key, value, str(path))
            origins[key] = str(path)
    for var, text in (env or {}).items():
        if not var.startswith(ENV_PREFIX):
            continue
        key = var[len(ENV_PREFIX) :].lower()
        if key in _FIELDS:
            values[key] = _coerce(key, _parse_env(key, text, var), var)
            origins[key] = var
    for key, value in (overrides or {}).items():
        if key not in _FIELDS:
            raise ConfigError(f"override: unknown key {key!r}")
        if value is not None:
            values[key] = _coerce(key, value, "command line")
            origins[key] = "command line"
    config = Config(**values)
    config.token_secret_file = config.token_secret_file.expanduser()
    config.validate(origins)
    return config


def resolve_token_secret(config: Config) -> tuple[str, bool]:
    """The configured secret, else the one in `token_secret_file` (created 0600 when absent).

    Returns `(secret, created)`. Two processes racing to create the file agree: creation is exclusive
    and the loser reads the winner's secret.
    """
    if config.token_secret:
        return config.token_secret, False
    file = config.token_secret_file.expanduser()
    try:
        return _read_secret(file), False
    except FileNotFoundError:
        pass
    try:
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(file), False
    except OSError as e:
        raise ConfigError(f"{file}: cannot create the token secret file: {e.strerror}") from None
    secret = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret, True


def resolve_publish_keys_file(config: Config) -> Path | None:
    """Where publish keys are kept: `publish_keys_file`, else beside the token secret file when the
    secret comes from that file; None (in memory, gone at restart) with an inline `token_secret`."""
    if config.publish_keys_file is not None:
        return config.publish_keys_file.expanduser()
    if config.token_secret:
        return None
    return config.token_secret_file.expanduser().parent / PUBLISH_KEYS_NAME


def _read_secret(file: Path) -> str:
    try:
        secret = file.read_text().strip()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ConfigError(f"{file}: cannot read the token secret file: {e.strerror}") from None
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"{file}: the token secret must be at least {MIN_SECRET_BYTES} bytes")
    return secret
