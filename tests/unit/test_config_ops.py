"""Configuration of the operator features: token_keys, drain_timeout, log_format, TLS, metrics_listen."""

from __future__ import annotations

import pytest

from sfu.config import ConfigError, load_config

SECRET = "s" * 32


def test_defaults_and_env():
    config = load_config(None, {"SFU_DRAIN_TIMEOUT": "5", "SFU_LOG_FORMAT": "json",
                                "SFU_TOKEN_KEYS": f'[{{"kid": "k1", "secret": "{SECRET}"}}]'})
    assert (config.drain_timeout, config.log_format) == (5.0, "json")
    assert config.token_keys == [{"kid": "k1", "secret": SECRET}]
    assert "token_keys" not in repr(config)  # secrets stay out of logs


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"token_keys": [{"kid": "k", "secret": "short"}]}, "at least 32 bytes"),
        ({"token_keys": [{"kid": "k", "secret": SECRET}, {"kid": "k", "secret": SECRET}]}, "unique"),
        ({"token_keys": [{"kid": "a b", "secret": SECRET}]}, "kid must be"),
        ({"token_keys": [{"secret": SECRET}]}, "exactly the string keys"),
        ({"drain_timeout": -1.0}, "drain_timeout"),
        ({"log_format": "xml"}, "log_format"),
        ({"tls_cert": "/c.pem"}, "tls_cert"),
        ({"metrics_listen": "9100"}, "HOST:PORT"),
    ],
)
def test_bad_values_say_what_and_where(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, {}, overrides)
    assert SECRET not in str(info.value) and "short" not in str(info.value)
