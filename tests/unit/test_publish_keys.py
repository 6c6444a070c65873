"""Encoders' long-lived publish keys (sfu/publish_keys.py): hashed, one stream, revocable."""

from __future__ import annotations

import json
import stat

import pytest

import sfu.config as config_module
from sfu.config import Config, resolve_publish_keys_file
from sfu.errors import Forbidden, Unauthorized
from sfu.publish_keys import PublishKeys, looks_like_key


def test_a_key_publishes_to_its_stream_only_and_is_stored_hashed(tmp_path):
    path = tmp_path / "state" / "publish-keys.json"
    keys = PublishKeys(path)
    key, entry = keys.create("shop1", "OBS studio A", now=1000.0)
    assert looks_like_key(key) and not looks_like_key("eyJhbGciOi.x.y") and not looks_like_key(None)
    assert keys.verify(key, "shop1") == entry
    with pytest.raises(Forbidden):
        keys.verify(key, "shop2")
    text = path.read_text()
    secret = key.rsplit("_", 1)[1]
    assert secret not in text and entry.sha256 in text  # only the hash is kept
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert entry.public() == {"id": entry.id, "stream": "shop1", "label": "OBS studio A", "created": 1000.0}
    again = PublishKeys(path)  # a restart reads them back
    assert again.verify(key, "shop1").id == entry.id


def test_wrong_malformed_and_revoked_keys_are_refused(tmp_path):
    keys = PublishKeys(tmp_path / "k.json")
    key, entry = keys.create("s", "", now=0.0)
    wrong_secret = key[:-3] + ("AAA" if not key.endswith("AAA") else "BBB")
    for bad in (wrong_secret, key + "x", "sfupk_zz_" + key.rsplit("_", 1)[1], "sfupk_"):
        with pytest.raises(Unauthorized):
            keys.verify(bad, "s")
    assert keys.revoke(entry.id) == entry and keys.revoke(entry.id) is None
    with pytest.raises(Unauthorized):
        keys.verify(key, "s")
    assert PublishKeys(tmp_path / "k.json").list() == []


def test_bad_names_labels_and_files():
    keys = PublishKeys()
    for stream in ("", "..", "shop*", "a/b", "x" * 129):
        with pytest.raises(ValueError):
            keys.create(stream, "", now=0.0)
    with pytest.raises(ValueError):
        keys.create("s", "line\nbreak", now=0.0)
    assert keys.list() == []


def test_a_corrupt_file_is_a_config_error(tmp_path):
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"keys": [{"id": 1}]}))
    with pytest.raises(config_module.ConfigError, match="not a publish keys file"):
        PublishKeys(path)


def test_where_keys_and_the_secret_live(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "SYSTEM_STATE_DIR", tmp_path / "absent")
    assert Config().token_secret_file == config_module.Path(config_module.DEFAULT_TOKEN_SECRET_FILE)
    system = tmp_path / "var-lib-sfu"
    system.mkdir()
    monkeypatch.setattr(config_module, "SYSTEM_STATE_DIR", system)
    config = Config()
    assert config.token_secret_file == system / "token-secret"  # a service install: whoever runs sfu token
    assert resolve_publish_keys_file(config) == system / "publish-keys.json"
    assert resolve_publish_keys_file(Config.for_tests()) is None  # inline secret: in memory
    assert resolve_publish_keys_file(Config(publish_keys_file=tmp_path / "p.json")) == tmp_path / "p.json"
