import jwt
import pytest

from sfu.errors import Forbidden, Unauthorized
from sfu.tokens import (
    CLOCK_SKEW_S,
    DEFAULT_TTL_S,
    MAX_TTL_S,
    NBF_LEEWAY_S,
    mint,
    parse_authorization,
    parse_ttl,
    verify,
)

SECRET = "k" * 32
NOW = 1_800_000_000


def test_round_trip_claims():
    token = mint(SECRET, "live", publish=True, subscribe=False, ttl_s=3600, participant="alice", now=NOW)
    raw = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False})
    assert raw == {"sub": "alice", "stream": "live", "caps": ["publish"], "iat": NOW, "exp": NOW + 3600, "iss": "sfu"}
    claims = verify(SECRET, token, "live", "publish", now=NOW + 10)
    assert claims.sub == claims.participant == "alice"
    assert claims.caps == frozenset({"publish"}) and claims.exp == NOW + 3600


def test_default_ttl_and_random_participant():
    a = verify(SECRET, mint(SECRET, "*", True, True, now=NOW), "x", "subscribe", now=NOW)
    b = verify(SECRET, mint(SECRET, "*", True, True, now=NOW), "x", "subscribe", now=NOW)
    assert a.exp - a.iat == DEFAULT_TTL_S == 12 * 3600
    assert a.sub != b.sub and a.sub.startswith("p-")


def test_expiry_with_fixed_now():
    token = mint(SECRET, "live", True, False, ttl_s=60, now=NOW)
    verify(SECRET, token, "live", "publish", now=NOW + 59)
    with pytest.raises(Unauthorized, match="expired"):
        verify(SECRET, token, "live", "publish", now=NOW + 60)


def test_issued_in_the_future_beyond_skew():
    token = mint(SECRET, "live", True, False, ttl_s=600, now=NOW)
    verify(SECRET, token, "live", "publish", now=NOW - CLOCK_SKEW_S)
    with pytest.raises(Unauthorized, match="future"):
        verify(SECRET, token, "live", "publish", now=NOW - CLOCK_SKEW_S - 1)


def test_ttl_bounds_on_mint():
    mint(SECRET, "live", True, False, ttl_s=MAX_TTL_S, now=NOW)
    for bad in (0, -1, MAX_TTL_S + 1):
        with pytest.raises(ValueError, match="lifetime"):
            mint(SECRET, "live", True, False, ttl_s=bad, now=NOW)


def test_verify_refuses_lifetime_over_14_days():
    token = jwt.encode(claims(exp=NOW + MAX_TTL_S + 1), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="14 days"):
        verify(SECRET, token, "live", "publish", now=NOW)


def test_mint_needs_a_capability_and_a_valid_stream():
    with pytest.raises(ValueError, match="capability"):
        mint(SECRET, "live", False, False)
    for bad in ("", "a/b", "x" * 129, "a b"):
        with pytest.raises(ValueError, match="stream"):
            mint(SECRET, bad, True, False)


@pytest.mark.parametrize(
    ("pattern", "stream", "allowed"),
    [
        ("*", "anything", True),
        ("shop-*", "shop-42", True),
        ("shop-*", "shopping", False),
        ("shop-*-cam", "shop--cam", True),  # `*` matches an empty run too
        ("a*b*c", "a-x-b-y-c", True),
        ("live", "live", True),
        ("live", "Live", False),  # case-sensitive
        ("live", "live2", False),
    ],
)
def test_stream_patterns(pattern, stream, allowed):
    token = mint(SECRET, pattern, True, True, now=NOW)
    if allowed:
        verify(SECRET, token, stream, "publish", now=NOW)
    else:
        with pytest.raises(Forbidden, match="stream"):
            verify(SECRET, token, stream, "publish", now=NOW)


@pytest.mark.parametrize(
    ("pattern", "stream"),
    [
        ("shop-?", "shop-1"),  # fnmatch's one-character wildcard
        ("shop-[0-9]", "shop-1"),  # fnmatch's character class
        ("shop-[!x]", "shop-1"),
        ("[a-z]*", "live"),
    ],
)
def test_only_star_is_a_wildcard(pattern, stream):
    """The docs promise `*` only: `?` and `[...]` in a token's pattern match nothing but themselves.
    mint refuses them; a token signed elsewhere with one must not widen its scope."""
    with pytest.raises(ValueError, match="wildcard"):
        mint(SECRET, pattern, True, True, now=NOW)
    token = jwt.encode(claims(stream=pattern), SECRET, algorithm="HS256")
    with pytest.raises(Forbidden, match="stream"):
        verify(SECRET, token, stream, "publish", now=NOW)


def test_regex_characters_in_a_pattern_are_literal():
    token = mint(SECRET, "a.c", True, False, now=NOW)
    verify(SECRET, token, "a.c", "publish", now=NOW)
    with pytest.raises(Forbidden):
        verify(SECRET, token, "abc", "publish", now=NOW)


def test_nbf_is_honoured_with_a_leeway():
    """RFC 7519 §4.1.5: not before `nbf` (give or take NBF_LEEWAY_S of clock difference)."""
    token = jwt.encode(claims(nbf=NOW + 600, exp=NOW + 3600), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="not valid yet"):
        verify(SECRET, token, "live", "publish", now=NOW)
    with pytest.raises(Unauthorized, match="not valid yet"):
        verify(SECRET, token, "live", "publish", now=NOW + 600 - NBF_LEEWAY_S - 1)
    verify(SECRET, token, "live", "publish", now=NOW + 600 - NBF_LEEWAY_S)
    verify(SECRET, token, "live", "publish", now=NOW + 600)


@pytest.mark.parametrize("nbf", ["soon", True, 10**400, [1]])
def test_malformed_nbf_is_refused(nbf):
    token = jwt.encode(claims(nbf=nbf), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="malformed"):
        verify(SECRET, token, "live", "publish", now=NOW)


@pytest.mark.parametrize(
    "token",
    [
        "eyJ\udcffhbGciOiJIUzI1NiJ9.e30.sig",  # a non-UTF-8 byte as aiohttp decodes it (surrogateescape)
        "abc.d\u00e9f.ghi",  # non-ASCII
        "abc.def.ghi\x00",
        "abc def.ghi.jkl",
    ],
)
def test_non_base64url_tokens_are_malformed_not_a_crash(token):
    with pytest.raises(Unauthorized, match="malformed"):
        verify(SECRET, token, "live", "publish", now=NOW)


def test_capabilities():
    viewer = mint(SECRET, "*", publish=False, subscribe=True, now=NOW)
    verify(SECRET, viewer, "live", "subscribe", now=NOW)
    with pytest.raises(Forbidden, match="publish"):
        verify(SECRET, viewer, "live", "publish", now=NOW)
    with pytest.raises(Forbidden, match="admin"):
        verify(SECRET, viewer, "live", "admin", now=NOW)  # the admin capability (sfu/keys.py)
    with pytest.raises(ValueError):
        verify(SECRET, viewer, "live", "root", now=NOW)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("not-a-jwt", "malformed"),
        ("a.b.c", "malformed"),
    ],
)
def test_unauthorized_reasons(token, reason):
    with pytest.raises(Unauthorized, match=reason):
        verify(SECRET, token, "live", "publish", now=NOW)


def claims(**changes):
    return {"sub": "x", "stream": "*", "caps": ["publish"], "iat": NOW, "exp": NOW + 60, "iss": "sfu", **changes}


def test_bad_signature_and_foreign_tokens():
    other = mint("o" * 32, "*", True, True, now=NOW)
    with pytest.raises(Unauthorized, match="signature"):
        verify(SECRET, other, "live", "publish", now=NOW)
    foreign = jwt.encode(claims(iss="idp"), SECRET)
    with pytest.raises(Unauthorized, match="issuer"):
        verify(SECRET, foreign, "live", "publish", now=NOW)
    no_exp = jwt.encode({k: v for k, v in claims().items() if k != "exp"}, SECRET)
    with pytest.raises(Unauthorized, match="exp"):
        verify(SECRET, no_exp, "live", "publish", now=NOW)
    bad_caps = jwt.encode(claims(caps="publish"), SECRET)
    with pytest.raises(Unauthorized, match="claims"):
        verify(SECRET, bad_caps, "live", "publish", now=NOW)
    unsigned = jwt.encode(claims(), None, algorithm="none")
    with pytest.raises(Unauthorized):
        verify(SECRET, unsigned, "live", "publish", now=NOW)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc.def.ghi", "abc.def.ghi"),
        ("BEARER   abc.def.ghi  ", "abc.def.ghi"),
        ("abc.def.ghi", "abc.def.ghi"),
        (" abc.def.ghi ", "abc.def.ghi"),
        (None, None),
        ("", None),
        ("Bearer", "Bearer"),  # no token after the scheme: treated as a (malformed) bare token
    ],
)
def test_parse_authorization(header, token):
    assert parse_authorization(header) == token


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("45s", 45), ("30m", 1800), ("12h", 43200), ("14d", 14 * 86400), ("2H", 7200)],
)
def test_parse_ttl(text, seconds):
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "12w", "1.5h", "-1h", "0", "15d", "12h30m"])
def test_parse_ttl_rejects(text):
    with pytest.raises(ValueError):
        parse_ttl(text)
