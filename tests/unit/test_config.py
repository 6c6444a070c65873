import os
import stat
from pathlib import Path

import pytest

from sfu.config import Config, ConfigError, load_config, resolve_token_secret

SECRET = "s" * 32


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sfu.toml"
    path.write_text(text)
    return path


def test_defaults():
    config = load_config(None, {}, {})
    assert config.http_port == 8080 and config.udp_port == 8443
    assert config.http_host == "0.0.0.0" and config.udp_ipv6 is True
    assert config.public_ips == [] and config.token_secret is None
    assert config.viewer_token_required is False and config.max_sessions == 0
    assert config.max_body_bytes == 65536 and config.cors_origin == "*"
    assert config.token_secret_file == Path("~/.local/state/sfu/token-secret").expanduser()


def test_toml_file(tmp_path):
    path = write(
        tmp_path,
        """
http_port = 9000
public_ips = ["203.0.113.5", "2001:db8::5"]
viewer_token_required = true
whep_wait_timeout = 5
token_secret_file = "/tmp/x/secret"
ice_servers = [{urls = "stun:stun.example.net"}, {urls = ["turn:t.example.net"], username = "u", credential = "c"}]
""",
    )
    config = load_config(path, {}, {})
    assert config.http_port == 9000
    assert config.public_ips == ["203.0.113.5", "2001:db8::5"]
    assert config.viewer_token_required is True
    assert config.whep_wait_timeout == 5.0 and isinstance(config.whep_wait_timeout, float)
    assert config.token_secret_file == Path("/tmp/x/secret")
    assert config.ice_servers[1]["username"] == "u"


def test_env_overrides_file_and_cli_overrides_env(tmp_path):
    path = write(tmp_path, "http_port = 9000\nudp_port = 9001\nmax_sessions = 3\n")
    env = {
        "SFU_HTTP_PORT": "9100",
        "SFU_UDP_PORT": "9101",
        "SFU_PUBLIC_IPS": "198.51.100.1, 198.51.100.2",
        "SFU_VIEWER_TOKEN_REQUIRED": "true",
        "SFU_CONFIG": "ignored.toml",  # other SFU_ variables are not fields: ignored
        "HOME_PORT": "1",
    }
    config = load_config(path, env, {"http_port": 9200, "max_sessions": None})
    assert config.http_port == 9200  # CLI beats env
    assert config.udp_port == 9101  # env beats file
    assert config.max_sessions == 3  # a None override leaves the value alone
    assert config.public_ips == ["198.51.100.1", "198.51.100.2"]
    assert config.viewer_token_required is True


@pytest.mark.parametrize(
    ("var", "text", "expected"),
    [
        ("SFU_VIEWER_TOKEN_REQUIRED", "false", False),
        ("SFU_VIEWER_TOKEN_REQUIRED", "1", True),
        ("SFU_WHEP_WAIT_TIMEOUT", "2.5", 2.5),
        ("SFU_PUBLIC_URL", "", None),
        ("SFU_ICE_SERVERS", '[{"urls": "stun:s.example.net"}]', [{"urls": "stun:s.example.net"}]),
    ],
)
def test_env_types(var, text, expected):
    config = load_config(None, {var: text}, {})
    assert getattr(config, var[4:].lower()) == expected


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("htp_port = 1", "unknown key 'htp_port'"),
        ('http_port = "80"', "http_port must be an integer, got str"),
        ("http_port = 70000", "http_port must be a port number 0-65535, got 70000"),
        ("udp_port = -1", "udp_port must be a port number"),
        ("viewer_token_required = 1", "viewer_token_required must be true or false"),
        ('public_ips = "1.2.3.4"', "public_ips must be a list of strings"),
        ("max_sessions = -2", "max_sessions must be >= 0"),
        ('log_level = "loud"', "log_level must be one of debug, info"),
        ('token_secret = "short"', "token_secret must be at least 32 bytes"),
        ('public_url = "example.com"', "public_url must be an http:// or https:// URL"),
        ('ice_servers = [{urls = "http://x"}]', "ice_servers[0]: 'http://x' is not a stun:"),
        ('ice_servers = [{urls = "turn:x", username = "u"}]', "username and credential go together"),
        ('ice_servers = [{url = "stun:x"}]', "unknown key(s) url"),
        ('webhook_urls = ["ftp://x"]', "webhook_urls must be a list of http:// or https:// URLs"),
        ('webhook_urls = ["https://x/hook"]', "webhook_urls needs a webhook_secret"),
        ("webhook_queue_size = 0", "webhook_queue_size must be >= 1"),
        ("metrics_stream_labels = -1", "metrics_stream_labels must be 0 (none) .. 1000"),
        ("http_port = ", "not valid TOML"),
    ],
)
def test_file_errors_name_file_key_and_expectation(tmp_path, toml, message):
    path = write(tmp_path, toml + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, {}, {})
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_env_and_override_errors_name_their_source():
    with pytest.raises(ConfigError, match=r"^SFU_HTTP_PORT: expected an integer, got 'eighty'"):
        load_config(None, {"SFU_HTTP_PORT": "eighty"}, {})
    with pytest.raises(ConfigError, match=r"^SFU_VIEWER_TOKEN_REQUIRED: expected true or false"):
        load_config(None, {"SFU_VIEWER_TOKEN_REQUIRED": "maybe"}, {})
    with pytest.raises(ConfigError, match=r"^SFU_HTTP_PORT: http_port must be a port number"):
        load_config(None, {"SFU_HTTP_PORT": "65536"}, {})
    with pytest.raises(ConfigError, match=r"^command line: http_port must be a port number"):
        load_config(None, {}, {"http_port": 99999})
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        load_config(None, {}, {"nope": 1})
    with pytest.raises(ConfigError, match="no such file"):
        load_config("/nonexistent/sfu.toml", {}, {})


def test_secret_not_in_repr_or_errors():
    config = load_config(None, {}, {"token_secret": SECRET})
    assert SECRET not in repr(config)
    with pytest.raises(ConfigError) as err:
        load_config(None, {"SFU_TOKEN_SECRET": "tooshort"}, {})
    assert "tooshort" not in str(err.value) and "SFU_TOKEN_SECRET" in str(err.value)


def test_for_tests():
    a, b = Config.for_tests(), Config.for_tests()
    assert a.http_port == 0 and a.udp_port == 0 and a.http_host == "127.0.0.1"
    assert a.public_ips == ["127.0.0.1"]
    assert a.token_secret and a.token_secret != b.token_secret
    a.validate()
    assert resolve_token_secret(a) == (a.token_secret, False)


def test_secret_file_created_once_0600_and_reused(tmp_path):
    config = Config(token_secret_file=tmp_path / "state" / "token-secret")
    secret, created = resolve_token_secret(config)
    assert created and len(secret) >= 32
    mode = stat.S_IMODE(os.stat(config.token_secret_file).st_mode)
    assert mode == 0o600
    assert resolve_token_secret(config) == (secret, False)


def test_secret_file_too_short_is_an_error(tmp_path):
    file = tmp_path / "token-secret"
    file.write_text("abc\n")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        resolve_token_secret(Config(token_secret_file=file))
