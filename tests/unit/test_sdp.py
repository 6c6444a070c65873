"""sfu.wire.sdp: parsing real offers, lossless round trips, precise errors, trickle fragments."""

from __future__ import annotations

import random

import pytest

from sfu.errors import BadRequest
from sfu.wire import sdp
from sfu.wire.sdp import Codec, Extmap, Rid, Simulcast

try:
    from tests.unit import sdp_samples as samples
except ImportError:  # tests/ is not a package: pytest puts this directory on sys.path
    import sdp_samples as samples  # type: ignore[no-redef]


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(samples.ALL_OFFERS))
def test_samples_round_trip(name: str) -> None:
    text = samples.ALL_OFFERS[name]
    desc = sdp.parse(text)
    out = desc.to_string()
    assert sdp.parse(out) == desc
    assert sdp.parse(out).to_string() == out
    assert out.endswith("\r\n") and "\n" not in out.replace("\r\n", "")
    # CRLF input and trailing whitespace parse to the same value.
    assert sdp.parse(crlf(text)) == desc
    assert sdp.parse("\n".join(line + "  \t" for line in text.splitlines())) == desc
    assert sdp.parse(text.encode()) == desc


@pytest.mark.parametrize("name", sorted(samples.ALL_OFFERS))
def test_round_trip_keeps_every_attribute_line(name: str) -> None:
    """Every a= line of the sample comes back (order may differ, whitespace normalised)."""
    text = samples.ALL_OFFERS[name]

    def attrs(t: str) -> list[str]:
        out = []
        for line in t.replace("\r\n", "\n").split("\n"):
            if line.startswith("a="):
                name, colon, value = line[2:].partition(":")
                out.append(name + colon + " ".join(value.split()))
        return sorted(out)

    assert attrs(sdp.parse(text).to_string()) == attrs(text)


# -- what real offers contain -----------------------------------------------------------------


def test_chrome_publish_simulcast() -> None:
    d = sdp.parse(samples.CHROME_PUBLISH_SIMULCAST)
    assert d.extmap_allow_mixed
    assert [(g.semantics, g.mids) for g in d.groups] == [("BUNDLE", ["0", "1"])]
    assert d.msid_semantic and d.msid_semantic.startswith("WMS ")
    audio, video = d.media
    assert (audio.kind, audio.mid, audio.direction, audio.port) == ("audio", "0", "sendonly", 9)
    assert audio.rtcp_mux and audio.rtcp_rsize and not audio.rtcp_mux_only
    assert audio.setup == "actpass" and audio.ice_ufrag and audio.ice_pwd
    assert audio.fingerprints[0][0] == "sha-256"
    assert len(audio.candidates) == 2 and all(c.startswith("candidate:") for c in audio.candidates)
    assert [c.pt for c in audio.codecs] == [111, 63, 9, 0, 8, 13, 110, 126]
    opus = audio.codecs[0]
    assert (opus.name, opus.clock_rate, opus.channels) == ("opus", 48000, 2)
    assert opus.fmtp_params() == {"minptime": "10", "useinbandfec": "1"}
    assert opus.rtcp_fb == ["transport-cc"]
    assert audio.codec(63) == Codec(63, "red", 48000, 2, "111/111", [])
    assert ("rtcp-xr", "rcvr-rtt=all") in audio.other and ("rtcp", "9 IN IP4 0.0.0.0") in audio.other
    assert [r.id for r in video.rids] == ["q", "h", "f"] and {r.direction for r in video.rids} == {"send"}
    assert video.simulcast == Simulcast("send", [["q"], ["h"], ["f"]])
    assert video.ssrcs == []  # Chrome declares no SSRC for rid-based simulcast
    vp8 = video.codecs[0]
    assert (vp8.pt, vp8.name) == (96, "VP8")
    assert vp8.rtcp_fb == ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    rtx = video.codec(97)
    assert rtx is not None and rtx.is_rtx and rtx.apt == 96
    names = {c.name for c in video.codecs}
    assert {"VP8", "VP9", "H264", "AV1", "rtx", "red", "ulpfec"} <= names
    dd = [e for e in video.extmaps if "dependency-descriptor" in e.uri]
    assert dd == [Extmap(12, sdp_dd_uri(), None, None)]


def sdp_dd_uri() -> str:
    return "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension"


def test_gstreamer_bundle_only_and_upper_case_opus() -> None:
    d = sdp.parse(samples.GSTREAMER_122_WEBRTCBIN)
    video, audio = d.media
    assert video.mid == "video0" and audio.mid == "audio1"
    assert audio.port == 0 and audio.bundle_only and not video.bundle_only
    assert video.rtcp_mux and video.rtcp_mux_only and video.rtcp_rsize
    assert audio.codecs[0].name == "OPUS"
    assert [(s.name, s.value is not None) for s in video.ssrcs] == [("msid", True), ("cname", True)]
    assert video.msid is None
    assert ("framerate", "30") in video.other
    assert "sprop-parameter-sets" in video.codecs[0].fmtp_params()
    assert video.candidates == [] and d.ice_options == "trickle"


def test_firefox_fmtp_before_rtpmap_and_session_fingerprint() -> None:
    d = sdp.parse(samples.FIREFOX_PUBLISH)
    assert d.direction == "sendrecv" and d.fingerprints and d.media[0].fingerprints == []
    audio, video = d.media
    assert audio.codec(101) == Codec(101, "telephone-event", 8000, 1, "0-15", [])
    assert audio.codec(9) == Codec(9, "G722", 8000, 1)
    ext = {e.uri: e for e in audio.extmaps}
    assert ext["urn:ietf:params:rtp-hdrext:csrc-audio-level"].direction == "recvonly"
    assert audio.end_of_candidates and len(audio.candidates) == 2
    assert [c.pt for c in video.codecs] == [120, 124, 121, 125, 126, 127, 97, 98, 123, 122, 119]
    assert video.codec(126).fmtp_params()["packetization-mode"] == "1"  # type: ignore[union-attr]
    assert video.codec(124).apt == 120  # type: ignore[union-attr]
    assert [(g.semantics, g.ssrcs) for g in video.ssrc_groups] == [("FID", [1597412263, 3512340987])]


def test_obs_groups_and_session_ice_options() -> None:
    d = sdp.parse(samples.OBS_30_WHIP)
    assert [g.semantics for g in d.groups] == ["BUNDLE", "LS"]
    assert d.ice_options == "ice2,trickle"
    assert all(m.candidates == [] for m in d.media)
    h264 = d.media[1].codecs[0]
    assert h264.fmtp_params()["profile-level-id"] == "42e01f"
    d32 = sdp.parse(samples.OBS_32_SIMULCAST)
    assert [r.id for r in d32.media[1].rids] == ["0", "1", "2"]
    assert d32.media[1].simulcast is not None and d32.media[1].simulcast.rid_ids() == ["0", "1", "2"]


def test_datachannel_section() -> None:
    d = sdp.parse(samples.CHROME_DATACHANNEL)
    app = d.media[2]
    assert (app.kind, app.protocol, app.formats) == ("application", "UDP/DTLS/SCTP", ["webrtc-datachannel"])
    assert app.codecs == []
    assert ("sctp-port", "5000") in app.other


# -- details ----------------------------------------------------------------------------------

MINIMAL = """v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
t=0 0
m=audio 9 UDP/TLS/RTP/SAVPF {formats}
c=IN IP4 0.0.0.0
{extra}"""


def minimal(formats: str = "111", extra: str = "a=rtpmap:111 opus/48000/2\n") -> str:
    return MINIMAL.format(formats=formats, extra=extra)


def test_extmap_attributes_and_directions() -> None:
    d = sdp.parse(
        minimal(
            extra="a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\n"
            "a=extmap:3/sendonly urn:ietf:params:rtp-hdrext:sdes:mid\n"
            "a=extmap:200 urn:example:two-byte\n"
        )
    )
    assert d.media[0].extmaps == [
        Extmap(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level", None, "vad=on"),
        Extmap(3, "urn:ietf:params:rtp-hdrext:sdes:mid", "sendonly", None),
        Extmap(200, "urn:example:two-byte", None, None),
    ]
    assert "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\r\n" in d.to_string()
    assert "a=extmap:3/sendonly urn:ietf:params:rtp-hdrext:sdes:mid\r\n" in d.to_string()


def test_static_payload_types_without_rtpmap() -> None:
    d = sdp.parse(minimal(formats="0 8 9 101", extra="a=fmtp:0 annexb=no\na=rtcp-fb:8 nack\na=fmtp:101 0-15\n"))
    codecs = d.media[0].codecs
    assert [(c.pt, c.name, c.clock_rate, c.explicit) for c in codecs] == [
        (0, "PCMU", 8000, False),
        (8, "PCMA", 8000, False),
        (9, "G722", 8000, False),
        (101, "", 0, False),  # dynamic PT with an fmtp but no rtpmap: tolerated, nameless
    ]
    assert codecs[0].fmtp == "annexb=no" and codecs[1].rtcp_fb == ["nack"]
    out = d.to_string()
    assert "a=rtpmap:" not in out
    assert sdp.parse(out) == d


def test_fmtp_params_tolerates_spaces_and_flags() -> None:
    c = Codec(96, "H264", 90000, fmtp="profile-level-id=42e01f; packetization-mode = 1;;level-asymmetry-allowed=1")
    assert c.fmtp_params() == {"profile-level-id": "42e01f", "packetization-mode": "1", "level-asymmetry-allowed": "1"}
    assert Codec(63, "red", 48000, 2, fmtp="111/111").fmtp_params() == {"111/111": ""}
    assert Codec(97, "rtx", 90000, fmtp="apt=96; rtx-time=3000").apt == 96
    assert Codec(97, "rtx", 90000, fmtp="apt=x").apt is None
    assert Codec(97, "rtx", 90000).apt is None


def test_simulcast_forms() -> None:
    d = sdp.parse(
        minimal(
            formats="96",
            extra="a=rtpmap:96 VP8/90000\na=rid:1 send\na=rid:2 send pt=96;max-width=1280\n"
            "a=rid:3 send\na=rid:r recv\na=simulcast:send 1,~2;3 recv r\n",
        )
    )
    m = d.media[0]
    assert m.rids[1] == Rid("2", "send", "pt=96;max-width=1280")
    assert m.simulcast == Simulcast("send", [["1", "~2"], ["3"]], [["r"]])
    assert m.simulcast.rid_ids() == ["1", "2", "3"]
    assert "a=simulcast:send 1,~2;3 recv r\r\n" in d.to_string()
    old = sdp.parse(minimal(formats="96", extra="a=rtpmap:96 VP8/90000\na=simulcast: send rid=q;h;f\n"))
    assert old.media[0].simulcast == Simulcast("send", [["q"], ["h"], ["f"]])


def test_unknown_lines_kept() -> None:
    text = minimal(extra="a=rtpmap:111 opus/48000/2\na=x-custom:some value\na=flag\nb=AS:64\ni=audio info\n")
    text = text.replace("t=0 0\n", "t=0 0\na=tool:test\nu=http://example.com\n")
    d = sdp.parse(text)
    assert ("tool", "test") in d.other and ("u", "http://example.com") in d.other_lines
    m = d.media[0]
    assert ("x-custom", "some value") in m.other and ("flag", None) in m.other
    assert m.bandwidths == ["AS:64"] and m.info == "audio info"
    assert sdp.parse(d.to_string()) == d


# -- errors -----------------------------------------------------------------------------------


BAD = [
    ("", "empty SDP"),
    ("   \r\n\n", "empty SDP"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\n", "no media sections"),
    ("o=- 1 1 IN IP4 1.2.3.4\nv=0\n", "line 1: SDP must start with v=0"),
    ("v=1\n", "unsupported SDP version"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio\n", "line 5: m= line has no port"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio 9\n", "line 5: m= line has no protocol"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio 9 RTP/AVP\n", "line 5: m= line has no formats"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio 70000 RTP/AVP 0\n", "line 5: port out of range"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio x RTP/AVP 0\n", "line 5: port is not a number"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio 9 RTP/AVP 200\n", "payload type out of range"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio \u0661 RTP/AVP 0\n", "port is not a number"),
    ("v=0\no=- 1 1\n", "line 2: o= line needs 6 fields"),
    ("v=0\nhello\n", "line 2: not '<type>=<value>'"),
    ("v=0\x00\x01\x02\n", "line 1: control characters"),
    (b"v=0\n\xff\xfe\x00garbage".decode("latin-1"), "control characters"),
]


@pytest.mark.parametrize(("text", "reason"), BAD)
def test_errors_name_the_problem(text: str, reason: str) -> None:
    with pytest.raises(BadRequest) as info:
        sdp.parse(text)
    assert reason in info.value.reason
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("a=rtpmap:111 opus\n", "line 7: a=rtpmap needs"),
        ("a=rtpmap:abc opus/48000/2\n", "line 7: payload type is not a number"),
        ("a=rtpmap:111 opus/48000/2\na=rtpmap:111 opus/48000/2\n", "line 8: second a=rtpmap for payload type 111"),
        ("a=fmtp:111 a=1\na=fmtp:111 b=2\n", "line 8: second a=fmtp"),
        ("a=extmap:0 urn:x\n", "extmap id 0 is reserved"),
        ("a=extmap:256 urn:x\n", "extmap id out of range"),
        ("a=extmap:1/sideways urn:x\n", "bad extmap direction"),
        ("a=extmap:1\n", "a=extmap needs"),
        ("a=ssrc:99999999999 cname:x\n", "ssrc"),
        ("a=ssrc:1\n", "a=ssrc needs"),
        ("a=rid:q sideways\n", "a=rid needs"),
        ("a=simulcast:send q;;f\n", "bad simulcast rid"),
        ("a=simulcast:send q recv\n", "a=simulcast needs"),
        ("a=fingerprint:sha-256\n", "a=fingerprint needs"),
        ("a=ice-ufrag:\n", "a=ice-ufrag has no value"),
        ("a=mid:0\na=mid:1\n", "second a=mid"),
        ("a=rtcp-fb:111\n", "a=rtcp-fb has no feedback type"),
        ("a=:x\n", "bad attribute name"),
        ("v=0\n", "line 7: v= line inside a media section"),
        ("c=IN IP4\n", "c= line needs 3 fields"),
    ],
)
def test_attribute_errors(extra: str, reason: str) -> None:
    with pytest.raises(BadRequest) as info:
        sdp.parse(minimal(extra=extra))
    assert reason in info.value.reason


def test_absurd_sizes_rejected_cleanly() -> None:
    with pytest.raises(BadRequest, match="too large"):
        sdp.parse(minimal() + "a=x-pad:" + "x" * 100 + "\n" * (sdp.MAX_SDP_CHARS))
    with pytest.raises(BadRequest, match="too large"):
        sdp.parse(b"v=0\n" * sdp.MAX_SDP_CHARS)
    with pytest.raises(BadRequest, match="longer than"):
        sdp.parse(minimal(extra="a=x-long:" + "y" * 10_000 + "\n"))
    many = minimal() + "m=audio 9 UDP/TLS/RTP/SAVPF 0\n" * (sdp.MAX_MEDIA_SECTIONS + 1)
    with pytest.raises(BadRequest, match="media sections"):
        sdp.parse(many)


def test_binary_garbage_rejected() -> None:
    rng = random.Random(7)
    for _ in range(50):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        with pytest.raises(BadRequest):
            sdp.parse(blob)
    with pytest.raises(BadRequest, match="not UTF-8"):
        sdp.parse(b"v=0\n\xc3\x28\n")


# -- trickle fragments (RFC 8840) ------------------------------------------------------------

FRAG = """a=ice-ufrag:EsAw
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
a=group:BUNDLE 0 1
m=audio 9 RTP/AVP 0
a=mid:0
a=candidate:1 1 UDP 2130706431 198.51.100.1 39132 typ host
a=candidate:2 1 TCP 2105524479 198.51.100.1 9 typ host tcptype active
m=video 9 RTP/AVP 0
a=mid:1
a=candidate:3 1 UDP 1694498815 203.0.113.5 50000 typ srflx raddr 198.51.100.1 rport 39132
a=end-of-candidates
"""


def test_sdpfrag() -> None:
    frag = sdp.parse_sdpfrag(crlf(FRAG))
    assert frag.credentials() == ("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1")
    assert [g.mids for g in frag.groups] == [["0", "1"]]
    assert [(m.mid, m.index, len(m.candidates)) for m in frag.media] == [("0", 0, 2), ("1", 1, 1)]
    assert frag.all_candidates()[0] == ("0", "candidate:1 1 UDP 2130706431 198.51.100.1 39132 typ host")
    assert frag.complete and frag.media[1].end_of_candidates and not frag.media[0].end_of_candidates


def test_sdpfrag_media_level_credentials_and_session_candidates() -> None:
    frag = sdp.parse_sdpfrag(
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\na=mid:0\na=ice-ufrag:abcd\na=ice-pwd:0123456789012345678901\n"
    )
    assert frag.credentials() == ("abcd", "0123456789012345678901")
    loose = sdp.parse_sdpfrag("a=candidate:1 1 udp 1 192.0.2.1 5000 typ host\na=end-of-candidates\n")
    assert loose.all_candidates() == [(None, "candidate:1 1 udp 1 192.0.2.1 5000 typ host")] and loose.complete
    assert sdp.parse_sdpfrag("") == sdp.SdpFrag()


@pytest.mark.parametrize(
    "text",
    [
        "hello world",
        "a=candidate:garbage\n",
        "a=candidate:1 1 udp 1 192.0.2.1 99999 typ host\n",
        "a=candidate:1 1 udp x 192.0.2.1 5000 typ host\n",
        "m=audio\n",
        "a=mid:0\n",
        "v=0\n",
        "a=ice-ufrag:\n",
        "a=\x00\x01\n",
        b"\xff\xfe".decode("latin-1"),
    ],
)
def test_sdpfrag_junk(text: str) -> None:
    with pytest.raises(BadRequest):
        sdp.parse_sdpfrag(text)


# -- fuzz -------------------------------------------------------------------------------------


def mutate(text: str, rng: random.Random) -> str:
    """One random edit of an SDP text: line deletion/duplication/swap, truncation, junk, bad numbers."""
    if not text:
        return rng.choice(["v=0", "\n", "m=audio 9 RTP/AVP 0"])
    lines = text.split("\n")
    op = rng.randrange(9)
    i = rng.randrange(len(lines))
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[rng.randrange(len(lines))])
    elif op == 2:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == 3:
        return text[: rng.randrange(len(text))]
    elif op == 4:
        pos = rng.randrange(len(text))
        junk = "".join(chr(rng.choice([0, 1, 9, 13, 32, 58, 59, 61, 126, 127, 233, 0x661, 0xFFFD])) for _ in range(3))
        return text[:pos] + junk + text[pos:]
    elif op == 5:
        words = lines[i].split(" ")
        k = rng.randrange(len(words))
        words[k] = rng.choice(["", "0", "-1", "99999999999", "x", "~", "/", ":", "*", "1/2/3", "65536", "128"])
        lines[i] = " ".join(words)
    elif op == 6:
        pos = rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:pos] + rng.choice([":", " ", "/", ";", ",", "=", "~"]) + lines[i][pos:]
    elif op == 7:
        lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
    else:
        lines[i] = lines[i].replace(":", " ", 1) if rng.random() < 0.5 else lines[i].replace(" ", "", 1)
    return "\n".join(lines)


def test_fuzzed_samples_only_raise_bad_request() -> None:
    rng = random.Random(20240601)
    parsed = 0
    for _ in range(600):
        text = rng.choice(list(samples.ALL_OFFERS.values()))
        for _ in range(rng.randrange(1, 4)):
            text = mutate(text, rng)
        try:
            desc = sdp.parse(text)
        except BadRequest:
            continue
        parsed += 1
        assert sdp.parse(desc.to_string()) == desc
    assert parsed > 100  # most single mutations of real offers are still valid SDP


def test_fuzzed_fragments_only_raise_bad_request() -> None:
    rng = random.Random(5)
    for _ in range(300):
        text = FRAG
        for _ in range(rng.randrange(1, 4)):
            text = mutate(text, rng)
        try:
            sdp.parse_sdpfrag(text)
        except BadRequest:
            pass
