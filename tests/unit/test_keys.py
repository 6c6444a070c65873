"""Signing keys with ids, token ids, revocation and the admin capability (sfu/keys.py), on a fake clock."""

from __future__ import annotations

import jwt
import pytest

from sfu import tokens
from sfu.errors import Forbidden, Unauthorized
from sfu.keys import ADMIN, LEGACY_KID, KeySet, Revocations, Revoked, describe

A = "a" * 32
B = "b" * 32
NOW = 1_800_000_000


def test_first_key_signs_with_its_kid_and_a_token_id():
    keys = KeySet([("new", B), ("old", A)])
    token = keys.mint("s", publish=True, participant="cam", now=NOW)
    assert jwt.get_unverified_header(token)["kid"] == "new"
    sub, jti, kid = describe(token)
    assert (sub, kid) == ("cam", "new") and jti
    grant = keys.verify(token, "s", tokens.PUBLISH, now=NOW)
    assert (grant.sub, grant.jti, grant.kid) == ("cam", jti, "new")
    assert describe(keys.mint("s", publish=True, now=NOW))[1] != jti  # one id per token


def test_each_key_verifies_only_tokens_that_name_it():
    old = KeySet([("old", A)]).mint("s", publish=True, now=NOW)
    assert KeySet([("new", B), ("old", A)]).verify(old, "s", tokens.PUBLISH, now=NOW).kid == "old"
    with pytest.raises(Unauthorized, match="removed key"):
        KeySet([("new", B)]).verify(old, "s", tokens.PUBLISH, now=NOW)
    with pytest.raises(Unauthorized, match="signature"):  # the kid names a key, but another signed it
        KeySet([("old", B)]).verify(old, "s", tokens.PUBLISH, now=NOW)


def test_tokens_without_kid_verify_only_against_the_legacy_key():
    plain = tokens.mint(A, "s", publish=True, subscribe=False, now=NOW)
    assert KeySet.from_config(A).signing_kid == LEGACY_KID
    assert KeySet.from_config(A).verify(plain, "s", tokens.PUBLISH, now=NOW).kid is None
    with pytest.raises(Unauthorized, match="no key id"):
        KeySet.from_config(A, [{"kid": "k2", "secret": B}]).verify(plain, "s", tokens.PUBLISH, now=NOW)
    kept = KeySet.from_config(A, [{"kid": "k2", "secret": B}, {"kid": LEGACY_KID, "secret": A}])
    assert kept.verify(plain, "s", tokens.PUBLISH, now=NOW).sub


def test_admin_capability():
    keys = KeySet([("k", A)])
    admin = keys.mint("*", admin=True, participant="ops", now=NOW)
    assert keys.verify(admin, "*", ADMIN, now=NOW).sub == "ops"
    with pytest.raises(Forbidden):
        keys.verify(admin, "s", tokens.PUBLISH, now=NOW)  # admin is not publish
    with pytest.raises(Forbidden):
        keys.verify(keys.mint("*", publish=True, subscribe=True, now=NOW), "*", ADMIN, now=NOW)
    with pytest.raises(Unauthorized, match="expired"):
        keys.verify(keys.mint("*", admin=True, ttl_s=60, now=NOW), "*", ADMIN, now=NOW + 60)
    with pytest.raises(ValueError):
        keys.mint("s", admin=True)


def test_revocation_by_token_id_and_participant_until_no_token_can_be_valid():
    revocations = Revocations()
    keys = KeySet([("k", A)], revocations)
    one = keys.mint("s", publish=True, participant="cam", now=NOW)
    other = keys.mint("s", publish=True, participant="cam", now=NOW)
    revocations.revoke(token_id=describe(one)[1], now=NOW)
    with pytest.raises(Revoked):
        keys.verify(one, "s", tokens.PUBLISH, now=NOW + 1)
    assert keys.verify(other, "s", tokens.PUBLISH, now=NOW + 1)
    revocations.revoke(participant="cam", now=NOW)
    with pytest.raises(Revoked):
        keys.verify(other, "s", tokens.PUBLISH, now=NOW + 1)
    assert revocations.snapshot(now=NOW + 1) == {"token_ids": [describe(one)[1]], "participants": ["cam"]}
    forget_at = NOW + tokens.MAX_TTL_S + tokens.CLOCK_SKEW_S
    assert revocations.is_revoked("cam", None, now=forget_at - 1)
    assert revocations.snapshot(now=forget_at) == {"token_ids": [], "participants": []}


@pytest.mark.parametrize("kid", ["", "a b", "x" * 65, "é"])
def test_bad_key_ids(kid):
    with pytest.raises(ValueError, match="key id"):
        KeySet([(kid, A)])


def test_duplicate_and_missing_keys():
    with pytest.raises(ValueError, match="twice"):
        KeySet([("k", A), ("k", B)])
    with pytest.raises(ValueError, match="at least one"):
        KeySet([])
