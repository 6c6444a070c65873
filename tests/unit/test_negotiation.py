"""sfu.core.negotiation: WHIP and WHEP answers against real clients' offers."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable

import pytest

from sfu.core import negotiation as neg
from sfu.core.negotiation import CodecSpec, LocalTransport, PublishedTrack
from sfu.errors import BadRequest, Unprocessable
from sfu.wire import sdp
from sfu.wire.sdp import Extmap, MediaSection, SessionDescription

try:
    from tests.unit import sdp_samples as samples
except ImportError:  # tests/ is not a package: pytest puts this directory on sys.path
    import sdp_samples as samples  # type: ignore[no-redef]

LOCAL = LocalTransport(
    ice_ufrag="srvUfrag",
    ice_pwd="serverIcePasswordOf24Chr",
    fingerprint=("sha-256", ":".join(["AB"] * 32)),
    candidates=[
        "candidate:1 1 udp 2130706431 192.0.2.10 8443 typ host",
        "candidate:2 1 udp 2130706175 2001:db8::10 8443 typ host",
    ],
)
DD = neg.URI_DEPENDENCY_DESCRIPTOR


def ssrcs(start: int = 0x1000) -> Callable[[], int]:
    counter = itertools.count(start)
    return lambda: next(counter)


def publish(name: str) -> neg.PublishAnswer:
    return neg.answer_publish(samples.PUBLISH_OFFERS[name], LOCAL)


def edit(text: str, change: Callable[[SessionDescription], None]) -> str:
    desc = sdp.parse(text)
    change(desc)
    return desc.to_string()


def keep_codecs(kind: str, names: Iterable[str]) -> Callable[[SessionDescription], None]:
    """Restrict the `kind` sections to the named codecs (plus RTX/RED pointing at them)."""
    wanted = {n.lower() for n in names}

    def change(desc: SessionDescription) -> None:
        for m in desc.media:
            if m.kind != kind:
                continue
            kept = [c for c in m.codecs if c.name.lower() in wanted]
            pts = {c.pt for c in kept}
            kept += [c for c in m.codecs if c.is_rtx and c.apt in pts]
            m.codecs = [c for c in m.codecs if c in kept]
            m.formats = [str(c.pt) for c in m.codecs]

    return change


def check_shape(offer_text: str, answer_text: str) -> SessionDescription:
    """The answer parses, keeps the offer's m-lines (count, order, kinds, mids) and is ICE-lite/passive."""
    offer, answer = sdp.parse(offer_text), sdp.parse(answer_text)
    assert [(m.kind, m.mid) for m in answer.media] == [(m.kind, m.mid) for m in offer.media]
    assert answer.ice_lite
    accepted = [m for m in answer.media if m.port != 0]
    assert accepted
    first = accepted[0]
    assert first.candidates == LOCAL.candidates and first.end_of_candidates
    for m in accepted:
        assert m.port == 9 and m.setup == "passive" and m.rtcp_mux
        assert m.ice_ufrag == LOCAL.ice_ufrag and m.ice_pwd == LOCAL.ice_pwd
        assert m.fingerprints == [LOCAL.fingerprint]
        assert not m.bundle_only
    for m in answer.media:
        if m.port == 0:
            assert m.direction == "inactive" and len(m.formats) == 1
    bundle = answer.bundle_group()
    assert bundle is not None and bundle.mids == [m.mid for m in accepted]
    return answer


# -- WHIP ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(samples.PUBLISH_OFFERS))
def test_publish_answer_shape(name: str) -> None:
    result = publish(name)
    answer = check_shape(samples.PUBLISH_OFFERS[name], result.sdp)
    offer = sdp.parse(samples.PUBLISH_OFFERS[name])
    for m_offer, m in zip(offer.media, answer.media, strict=True):
        if m.port:
            assert m.direction == "recvonly"
            assert m.rtcp_rsize == m_offer.rtcp_rsize
            for c in m.codecs:
                assert set(c.rtcp_fb) <= set(neg.ALLOWED_FEEDBACK)
                assert c.fmtp == m_offer.codec(c.pt).fmtp  # type: ignore[union-attr]
    assert answer.extmap_allow_mixed == offer.extmap_allow_mixed
    assert [t.mid for t in result.tracks] == [m.mid for m in answer.media if m.port]
    assert result.sdp.endswith("\r\n")


def test_chrome_simulcast_publish() -> None:
    result = publish("chrome_simulcast")
    answer = sdp.parse(result.sdp)
    audio, video = answer.media
    assert [c.name for c in audio.codecs] == ["opus", "red"]
    assert audio.codecs[0].rtcp_fb == ["transport-cc"] and audio.codecs[1].fmtp == "111/111"
    assert [c.name for c in video.codecs] == ["VP8", "rtx"] and video.formats == ["96", "97"]
    assert video.codecs[0].rtcp_fb == ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    assert [(r.id, r.direction) for r in video.rids] == [("q", "recv"), ("h", "recv"), ("f", "recv")]
    assert "a=simulcast:recv q;h;f\r\n" in result.sdp
    assert answer.extmap_allow_mixed and "a=extmap-allow-mixed" in result.sdp
    ids = {e.uri: e.id for e in video.extmaps}
    assert ids == {
        neg.URI_ABS_SEND_TIME: 2,
        neg.URI_VIDEO_ORIENTATION: 13,
        neg.URI_TWCC: 3,
        neg.URI_MID: 4,
        neg.URI_RID: 10,
        neg.URI_REPAIRED_RID: 11,
        DD: 12,
    }  # toffset, playout-delay, video-timing, color-space, VLA are not understood: not echoed
    a, v = result.tracks
    assert a.codec == CodecSpec("opus", 48000, 2, 111, "minptime=10;useinbandfec=1", None, ("transport-cc",), 63)
    assert a.extensions[neg.URI_AUDIO_LEVEL] == 1 and a.kind == "audio"
    assert (v.codec.name, v.codec.payload_type, v.codec.rtx_payload_type) == ("VP8", 96, 97)
    assert v.rids == ("q", "h", "f") and v.ssrcs == () and v.extensions == ids
    assert v.track_id == "a7241178-d04d-427b-87bc-24a2132977cc"
    assert a.ssrcs == (20218878,)
    assert result.remote.setup == "actpass" and len(result.remote.candidates) == 2
    assert result.remote.ice_ufrag == "M8Lv" and result.remote.fingerprints[0][0] == "sha-256"


def test_obs_h264_kept_verbatim_without_candidates() -> None:
    result = publish("obs30")
    audio, video = sdp.parse(result.sdp).media
    assert video.codecs[0].fmtp == "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1"
    assert video.codecs[0].rtcp_fb == ["nack", "nack pli", "goog-remb"]
    assert audio.codecs[0].fmtp == "minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1"
    assert result.remote.candidates == [] and result.remote.fingerprints[0][1].startswith("A1:7E")
    a, v = result.tracks
    assert v.codec.rtx_payload_type is None and v.rids == () and v.ssrcs == (2410716520,)
    assert (a.track_id, v.track_id, v.stream_msid) == ("obs-studio-audio", "obs-studio-video", "obs-studio")
    assert v.extensions == {} and a.codec.red_payload_type is None


def test_obs_32_simulcast_every_rid_accepted() -> None:
    result = publish("obs32_simulcast")
    video = sdp.parse(result.sdp).media[1]
    assert [(r.id, r.direction) for r in video.rids] == [("0", "recv"), ("1", "recv"), ("2", "recv")]
    assert "a=simulcast:recv 0;1;2\r\n" in result.sdp
    v = result.tracks[1]
    assert v.rids == ("0", "1", "2") and v.ssrcs == (3054726842,)  # OBS declares only the first SSRC
    assert v.extensions == {neg.URI_MID: 4, neg.URI_RID: 5}


def test_gstreamer_bundle_only_section_is_bundled() -> None:
    result = publish("gstreamer122")
    answer = sdp.parse(result.sdp)
    video, audio = answer.media
    assert audio.port == 9 and audio.direction == "recvonly" and audio.mid == "audio1"
    assert answer.bundle_group().mids == ["video0", "audio1"]  # type: ignore[union-attr]
    assert audio.codecs[0].name == "OPUS" and audio.codecs[0].pt == 97
    assert "sprop-parameter-sets" in (video.codecs[0].fmtp or "")
    v, a = result.tracks
    assert (v.kind, a.kind, a.codec.name, a.codec.channels) == ("video", "audio", "opus", 2)
    assert v.track_id == "webrtctransceiver0" and v.ssrcs == (3269232376,)
    assert result.remote.setup == "actpass"


def test_datachannel_rejected_in_place() -> None:
    result = publish("chrome_datachannel")
    answer = sdp.parse(result.sdp)
    app = answer.media[2]
    assert (app.kind, app.port, app.protocol, app.formats, app.mid) == (
        "application",
        0,
        "UDP/DTLS/SCTP",
        ["webrtc-datachannel"],
        "2",
    )
    assert "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n" in result.sdp
    assert answer.bundle_group().mids == ["0", "1"]  # type: ignore[union-attr]
    video = result.tracks[1]
    ((ssrc, rtx_ssrc),) = video.rtx_ssrcs.items()
    assert video.ssrcs == (ssrc,) and rtx_ssrc not in video.ssrcs


def test_firefox_session_level_fingerprint() -> None:
    result = publish("firefox")
    assert result.remote.fingerprints[0][1].startswith("5D:0F")
    assert result.remote.ice_ufrag == "8f2c1a3d" and result.remote.candidates[0].startswith("candidate:0 1 UDP")
    a, v = result.tracks
    assert (a.codec.payload_type, v.codec.name, v.codec.rtx_payload_type) == (109, "VP8", 124)
    assert v.rtx_ssrcs == {1597412263: 3512340987} and v.ssrcs == (1597412263,)
    audio = sdp.parse(result.sdp).media[0]
    assert [e.uri for e in audio.extmaps] == [neg.URI_AUDIO_LEVEL, neg.URI_MID]


def test_first_supported_codec_and_h264_any_profile() -> None:
    # Only H.264 High 5.2, listed after codecs the server does not forward: accepted as is.
    def change(desc: SessionDescription) -> None:
        keep_codecs("video", ["H264", "ulpfec"])(desc)
        video = desc.media[1]
        video.codecs = [c for c in video.codecs if c.name == "ulpfec"] + [c for c in video.codecs if c.name != "ulpfec"]
        video.formats = [str(c.pt) for c in video.codecs]
        for c in video.codecs:
            if c.name == "H264":
                c.fmtp = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640034"

    result = neg.answer_publish(edit(samples.CHROME_PUBLISH_SIMULCAST, change), LOCAL)
    v = result.tracks[1]
    assert v.codec.name == "H264" and v.codec.payload_type == 102 and v.codec.rtx_payload_type == 103
    assert v.codec.fmtp == "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640034"
    for name, pt in (("VP9", 98), ("AV1", 45)):
        r = neg.answer_publish(edit(samples.CHROME_PUBLISH_SIMULCAST, keep_codecs("video", [name])), LOCAL)
        assert (r.tracks[1].codec.name, r.tracks[1].codec.payload_type) == (name, pt)


def test_sim_group_order_and_fid_pairs() -> None:
    def change(desc: SessionDescription) -> None:
        video = desc.media[1]
        video.rids, video.simulcast = [], None
        video.ssrc_groups = [
            sdp.SsrcGroup("FID", [11, 21]),
            sdp.SsrcGroup("FID", [12, 22]),
            sdp.SsrcGroup("SIM", [13, 11, 12]),
            sdp.SsrcGroup("FID", [13, 23]),
        ]
        video.ssrcs = [sdp.SsrcAttr(s, "cname", "x") for s in (11, 21, 12, 22, 13, 23)]

    v = neg.answer_publish(edit(samples.CHROME_PUBLISH_SIMULCAST, change), LOCAL).tracks[1]
    assert v.ssrcs == (13, 11, 12) and v.rtx_ssrcs == {11: 21, 12: 22, 13: 23} and v.rids == ()


def test_extension_direction_echo() -> None:
    def change(desc: SessionDescription) -> None:
        desc.media[0].extmaps = [
            Extmap(5, neg.URI_MID, "sendonly"),
            Extmap(6, neg.URI_AUDIO_LEVEL, "recvonly"),  # publisher would only receive it: useless
            Extmap(7, neg.URI_ABS_SEND_TIME, None, "junk=1"),
        ]

    result = neg.answer_publish(edit(samples.CHROME_AUDIO_ONLY, change), LOCAL)
    assert "a=extmap:5/recvonly urn:ietf:params:rtp-hdrext:sdes:mid\r\n" in result.sdp
    assert f"a=extmap:7 {neg.URI_ABS_SEND_TIME}\r\n" in result.sdp
    assert result.tracks[0].extensions == {neg.URI_MID: 5, neg.URI_ABS_SEND_TIME: 7}


def test_publisher_recvonly_section_answered_inactive() -> None:
    def change(desc: SessionDescription) -> None:
        desc.media[1].direction = "recvonly"

    text = edit(samples.OBS_30_WHIP, change)
    result = neg.answer_publish(text, LOCAL)
    answer = check_shape(text, result.sdp)
    assert answer.media[1].direction == "inactive" and answer.media[1].port == 9
    assert [t.kind for t in result.tracks] == ["audio"]

    def all_recv(desc: SessionDescription) -> None:
        for m in desc.media:
            m.direction = "recvonly"

    with pytest.raises(Unprocessable, match="no section of the offer sends"):
        neg.answer_publish(edit(samples.OBS_30_WHIP, all_recv), LOCAL)


def test_unsupported_video_codec_section_rejected_audio_kept() -> None:
    text = edit(samples.CHROME_PUBLISH_SIMULCAST, keep_codecs("video", ["ulpfec"]))
    result = neg.answer_publish(text, LOCAL)
    answer = check_shape(text, result.sdp)
    assert answer.media[1].port == 0 and [t.kind for t in result.tracks] == ["audio"]


def test_no_bundle_single_section_ok_several_refused() -> None:
    def no_groups(desc: SessionDescription) -> None:
        desc.groups = []

    result = neg.answer_publish(edit(samples.CHROME_AUDIO_ONLY, no_groups), LOCAL)
    assert sdp.parse(result.sdp).groups == []
    with pytest.raises(Unprocessable, match="BUNDLE"):
        neg.answer_publish(edit(samples.OBS_30_WHIP, no_groups), LOCAL)


def test_section_outside_bundle_rejected() -> None:
    def change(desc: SessionDescription) -> None:
        desc.groups[0].mids = ["1"]

    answer = sdp.parse(neg.answer_publish(edit(samples.OBS_30_WHIP, change), LOCAL).sdp)
    assert [m.port for m in answer.media] == [0, 9] and answer.bundle_group().mids == ["1"]  # type: ignore[union-attr]


def _drop_attr(text: str, prefix: str) -> str:
    return "\n".join(line for line in text.split("\n") if not line.startswith(prefix))


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda t: _drop_attr(t, "a=ice-ufrag"), "no a=ice-ufrag"),
        (lambda t: _drop_attr(t, "a=ice-pwd"), "no a=ice-pwd"),
        (lambda t: _drop_attr(t, "a=fingerprint"), "no a=fingerprint"),
        (lambda t: t.replace("a=fingerprint:sha-256", "a=fingerprint:md5"), "uses md5"),
        (lambda t: t.replace("a=setup:actpass", "a=setup:passive"), "a=setup:passive"),
        (lambda t: t.replace("a=setup:actpass", "a=setup:holdconn"), "a=setup:holdconn"),
        (lambda t: t.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"), "uses RTP/AVP"),
        (lambda t: t.replace("UDP/TLS/RTP/SAVPF", "TCP/TLS/RTP/SAVPF"), "uses TCP/TLS/RTP/SAVPF"),
        (lambda t: t.replace("m=audio 9", "m=audio 0").replace("m=video 9", "m=video 0"), "no usable media"),
        (lambda t: _drop_attr(t, "a=mid"), "has no a=mid"),
        (lambda t: t.replace("a=mid:1", "a=mid:0").replace("BUNDLE 0 1", "BUNDLE 0"), "repeats an a=mid"),
    ],
)
def test_offer_checks_are_422(mangle: Callable[[str], str], reason: str) -> None:
    with pytest.raises(Unprocessable) as info:
        neg.answer_publish(mangle(samples.OBS_30_WHIP), LOCAL)
    assert reason in info.value.reason and info.value.status == 422


def test_no_forwarded_codec_is_422_naming_offered() -> None:
    text = edit(samples.CHROME_AUDIO_ONLY, keep_codecs("audio", ["PCMU", "G722"]))
    with pytest.raises(Unprocessable, match="offer has G722, PCMU"):
        neg.answer_publish(text, LOCAL)
    with pytest.raises(Unprocessable, match="no audio or video"):
        neg.answer_publish(
            "v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nt=0 0\na=group:BUNDLE 0\n"
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\na=mid:0\n",
            LOCAL,
        )


def test_missing_setup_means_active() -> None:
    result = neg.answer_publish(_drop_attr(samples.OBS_30_WHIP, "a=setup"), LOCAL)
    assert result.remote.setup == "active"


def test_unparsable_offer_is_400() -> None:
    with pytest.raises(BadRequest):
        neg.answer_publish("not sdp", LOCAL)
    with pytest.raises(BadRequest):
        neg.answer_subscribe("v=0\nm=video\n", LOCAL, publish("obs30").tracks, ssrcs(), "s")


# -- WHEP ------------------------------------------------------------------------------------


def subscribe(tracks: tuple[PublishedTrack, ...], offer: str = samples.CHROME_WHEP_RECVONLY) -> neg.SubscribeAnswer:
    return neg.answer_subscribe(offer, LOCAL, tracks, ssrcs(), "stream1")


@pytest.mark.parametrize("name", sorted(samples.PUBLISH_OFFERS))
def test_chrome_viewer_for_every_publisher(name: str) -> None:
    published = publish(name).tracks
    result = subscribe(published)
    answer = check_shape(samples.CHROME_WHEP_RECVONLY, result.sdp)
    viewer = sdp.parse(samples.CHROME_WHEP_RECVONLY)
    for track in result.tracks:
        source = published[track.source_index]
        m = next(s for s in answer.media if s.mid == track.mid)
        offered = next(s for s in viewer.media if s.mid == track.mid)
        assert m.kind == source.kind and m.direction == "sendonly"
        codec = m.codecs[0]
        assert codec.pt == track.payload_type and codec.name.lower() == source.codec.name.lower()
        viewer_codec = offered.codec(codec.pt)
        assert viewer_codec is not None and viewer_codec.name.lower() == source.codec.name.lower()
        expected_fmtp = source.codec.fmtp if source.codec.name == "H264" else viewer_codec.fmtp
        assert codec.fmtp == expected_fmtp
        assert m.msid == f"stream1 {source.track_id}"
        declared = {(a.ssrc, a.name) for a in m.ssrcs}
        assert {(track.ssrc, "cname"), (track.ssrc, "msid")} <= declared
        if track.rtx_payload_type is not None:
            assert track.rtx_ssrc is not None
            assert [(g.semantics, g.ssrcs) for g in m.ssrc_groups] == [("FID", [track.ssrc, track.rtx_ssrc])]
            rtx = m.codec(track.rtx_payload_type)
            assert rtx is not None and rtx.is_rtx and rtx.apt == track.payload_type
        assert set(track.extensions) <= neg.SUBSCRIBE_OWN_EXTENSIONS | neg.SUBSCRIBE_COPIED_EXTENSIONS
    kinds = {t.kind for t in published}
    assert len(result.tracks) == len(kinds)  # Chrome offers one audio and one video section


def test_viewer_h264_profile_match_and_fallback() -> None:
    obs = subscribe(publish("obs30").tracks)
    video = obs.tracks[1]
    assert (video.payload_type, video.rtx_payload_type) == (108, 109)  # Chrome's 42e01f mode-1 PT
    gst = subscribe(publish("gstreamer122").tracks)
    video = next(t for t in gst.tracks if t.mid == "1")
    assert video.payload_type == 102  # no 42c015 PT at Chrome: first packetization-mode=1 H264
    m = sdp.parse(gst.sdp).media[1]
    assert m.codecs[0].fmtp is not None and "profile-level-id=42c015" in m.codecs[0].fmtp  # publisher's fmtp


def test_viewer_h264_packetization_mode_must_match() -> None:
    def only_mode0(desc: SessionDescription) -> None:
        keep_codecs("video", ["H264"])(desc)
        video = desc.media[1]
        video.codecs = [c for c in video.codecs if "packetization-mode=0" in (c.fmtp or "") or c.is_rtx]
        video.formats = [str(c.pt) for c in video.codecs]

    with pytest.raises(Unprocessable, match="stream sends H264; offer has H264"):
        subscribe(publish("obs30").tracks[1:], edit(samples.CHROME_WHEP_RECVONLY, only_mode0))


def test_viewer_without_publisher_codec_gets_422_not_406() -> None:
    video_only = publish("obs30").tracks[1:]
    offer = edit(samples.CHROME_WHEP_RECVONLY, keep_codecs("video", ["VP8", "VP9"]))
    with pytest.raises(Unprocessable) as info:
        subscribe(video_only, offer)
    assert info.value.reason == "stream sends H264; offer has VP8, VP9"
    assert info.value.status == 422


def test_audio_only_stream_answers_video_inactive_in_the_bundle() -> None:
    audio_only = publish("chrome_audio_only").tracks
    result = subscribe(audio_only)
    answer = check_shape(samples.CHROME_WHEP_RECVONLY, result.sdp)
    assert [m.port for m in answer.media] == [9, 9]
    video = answer.media[1]
    assert video.mid == "1" and video.direction == "inactive"
    assert answer.bundle_group().mids == ["0", "1"]  # type: ignore[union-attr]
    # the viewer's first video codec, echoed without feedback or extensions; no SSRCs announced
    assert [c.name for c in video.codecs] == ["VP8"] and video.codecs[0].rtcp_fb == []
    assert video.extmaps == [] and video.ssrcs == [] and video.msid is None
    (track,) = result.tracks
    assert track.red_payload_type == 63 and track.payload_type == 111  # both sides have RED


def _video_first(desc: SessionDescription) -> None:
    """A player's order: video transceiver added before audio (m=video is the first section)."""
    desc.media.reverse()
    desc.groups[0].mids = [m.mid for m in desc.media]  # type: ignore[misc]


@pytest.mark.parametrize("order", ["audio-first", "video-first"])
def test_audio_only_stream_either_section_order(order: str) -> None:
    """Chromium takes the bundle's transport from the first section: whichever order the viewer
    offered, the first section is never port 0 and every section stays in the BUNDLE group."""
    offer = samples.CHROME_WHEP_RECVONLY if order == "audio-first" else edit(samples.CHROME_WHEP_RECVONLY, _video_first)
    result = subscribe(publish("chrome_audio_only").tracks, offer)
    answer = check_shape(offer, result.sdp)
    offered = sdp.parse(offer)
    assert [m.port for m in answer.media] == [9, 9]
    assert answer.bundle_group().mids == [m.mid for m in offered.media]  # type: ignore[union-attr]
    assert answer.media[0].candidates == LOCAL.candidates  # the bundle's transport, whatever kind
    directions = {m.kind: m.direction for m in answer.media}
    assert directions == {"audio": "sendonly", "video": "inactive"}
    (track,) = result.tracks
    assert track.mid == next(m.mid for m in offered.media if m.kind == "audio")


@pytest.mark.parametrize("order", ["audio-first", "video-first"])
def test_video_only_stream_either_section_order(order: str) -> None:
    offer = samples.CHROME_WHEP_RECVONLY if order == "audio-first" else edit(samples.CHROME_WHEP_RECVONLY, _video_first)
    result = subscribe(publish("obs30").tracks[1:], offer)
    answer = check_shape(offer, result.sdp)
    assert [m.port for m in answer.media] == [9, 9]
    assert {m.kind: m.direction for m in answer.media} == {"audio": "inactive", "video": "sendonly"}
    audio = next(m for m in answer.media if m.kind == "audio")
    assert [c.name for c in audio.codecs] == ["opus"]  # not RED: the offer's first media codec


def test_kind_mismatch_only_is_422() -> None:
    video_only = publish("obs30").tracks[1:]

    def audio_only_offer(desc: SessionDescription) -> None:
        desc.media = desc.media[:1]
        desc.groups[0].mids = ["0"]

    with pytest.raises(Unprocessable, match="stream has video only; offer asks for audio"):
        subscribe(video_only, edit(samples.CHROME_WHEP_RECVONLY, audio_only_offer))
    with pytest.raises(Unprocessable, match="stream has no tracks"):
        subscribe(())


def test_extra_sections_answered_inactive_in_place() -> None:
    def three_sections(desc: SessionDescription) -> None:
        extra = sdp.parse(desc.to_string()).media[1]
        extra.mid = "2"
        desc.media.append(extra)
        desc.groups[0].mids.append("2")

    offer = edit(samples.CHROME_WHEP_RECVONLY, three_sections)
    result = subscribe(publish("chrome_simulcast").tracks, offer)
    answer = check_shape(offer, result.sdp)
    assert [m.port for m in answer.media] == [9, 9, 9]
    assert [m.direction for m in answer.media] == ["sendonly", "sendonly", "inactive"]
    assert [t.source_index for t in result.tracks] == [0, 1]


def test_sections_map_in_order_to_tracks_of_their_kind() -> None:
    two_video = (*publish("obs30").tracks, publish("chrome_simulcast").tracks[1])

    def three_sections(desc: SessionDescription) -> None:
        extra = sdp.parse(desc.to_string()).media[1]
        extra.mid = "2"
        desc.media.append(extra)
        desc.groups[0].mids.append("2")

    result = subscribe(two_video, edit(samples.CHROME_WHEP_RECVONLY, three_sections))
    assert [(t.mid, t.source_index) for t in result.tracks] == [("0", 0), ("1", 1), ("2", 2)]
    assert result.tracks[2].payload_type == 96  # VP8 source


def test_viewer_extensions_only_those_the_server_writes() -> None:
    def add_dd(desc: SessionDescription) -> None:
        desc.media[1].extmaps.append(Extmap(9, DD))

    offer = edit(samples.CHROME_WHEP_RECVONLY, add_dd)
    with_dd = subscribe(publish("chrome_simulcast").tracks, offer)
    audio, video = with_dd.tracks
    assert video.extensions == {
        neg.URI_ABS_SEND_TIME: 2,
        neg.URI_VIDEO_ORIENTATION: 13,
        neg.URI_TWCC: 3,
        neg.URI_MID: 4,
        DD: 9,
    }  # not rid/repaired-rid (the server sends one plain stream), nor toffset etc.
    assert audio.extensions == {neg.URI_AUDIO_LEVEL: 1, neg.URI_ABS_SEND_TIME: 2, neg.URI_TWCC: 3, neg.URI_MID: 4}
    without = subscribe(publish("obs30").tracks, offer)  # OBS negotiated no extension at all
    assert set(without.tracks[1].extensions) == {neg.URI_ABS_SEND_TIME, neg.URI_TWCC, neg.URI_MID}
    assert set(without.tracks[0].extensions) == {neg.URI_ABS_SEND_TIME, neg.URI_TWCC, neg.URI_MID}


def test_feedback_flags() -> None:
    result = subscribe(publish("chrome_simulcast").tracks)
    audio, video = result.tracks
    assert (audio.nack, audio.pli, audio.fir, audio.transport_cc, audio.remb) == (False, False, False, True, False)
    assert (video.nack, video.pli, video.fir, video.transport_cc, video.remb) == (True, True, True, True, True)

    def no_twcc_ext(desc: SessionDescription) -> None:
        for m in desc.media:
            m.extmaps = [e for e in m.extmaps if e.uri != neg.URI_TWCC]

    result = subscribe(publish("chrome_simulcast").tracks, edit(samples.CHROME_WHEP_RECVONLY, no_twcc_ext))
    assert not result.tracks[1].transport_cc


def test_viewer_without_rtx() -> None:
    def no_rtx(desc: SessionDescription) -> None:
        for m in desc.media:
            m.codecs = [c for c in m.codecs if not c.is_rtx]

    offer = edit(samples.CHROME_WHEP_RECVONLY, no_rtx)
    result = subscribe(publish("chrome_simulcast").tracks, offer)
    video = result.tracks[1]
    assert video.rtx_payload_type is None and video.rtx_ssrc is None
    m = sdp.parse(result.sdp).media[1]
    assert m.ssrc_groups == [] and m.formats == ["96"] and {a.ssrc for a in m.ssrcs} == {video.ssrc}


def test_viewer_opus_channels_must_match() -> None:
    def mono(desc: SessionDescription) -> None:
        desc.media[0].codecs[0].channels = 1

    offer = edit(samples.CHROME_WHEP_RECVONLY, mono)
    # The stream has audio the viewer cannot decode: a clear 422, not video over silence.
    with pytest.raises(Unprocessable, match="stream sends opus"):
        subscribe(publish("chrome_simulcast").tracks, offer)


def test_viewer_sendonly_section_inactive_and_cname() -> None:
    def sendonly_audio(desc: SessionDescription) -> None:
        desc.media[0].direction = "sendonly"

    offer = edit(samples.CHROME_WHEP_RECVONLY, sendonly_audio)
    result = neg.answer_subscribe(offer, LOCAL, publish("obs30").tracks, ssrcs(7), "s", cname="viewer-cname")
    answer = sdp.parse(result.sdp)
    # the viewer's first section carries nothing but stays in the bundle (its transport is the bundle's)
    assert [(m.port, m.direction) for m in answer.media] == [(9, "inactive"), (9, "sendonly")]
    assert answer.bundle_group().mids == ["0", "1"]  # type: ignore[union-attr]
    assert {a.value for a in answer.media[1].ssrcs if a.name == "cname"} == {"viewer-cname"}
    assert result.tracks[0].ssrc == 7 and result.tracks[0].rtx_ssrc == 8


def test_gstreamer_viewer_bundle_only() -> None:
    """A webrtcbin-style recvonly offer (bundle-only port 0 second section) is answered on one transport."""

    def recvonly(desc: SessionDescription) -> None:
        for m in desc.media:
            m.direction = "recvonly"
            m.ssrcs = []

    offer = edit(samples.GSTREAMER_122_WEBRTCBIN, recvonly)
    result = subscribe(publish("obs30").tracks, offer)
    answer = check_shape(offer, result.sdp)
    assert [m.port for m in answer.media] == [9, 9]
    assert [(t.mid, t.source_index, t.payload_type) for t in result.tracks] == [("video0", 1, 96), ("audio1", 0, 97)]
    assert answer.media[1].codecs[0].name == "OPUS"


def test_whep_offer_without_media_is_422() -> None:
    with pytest.raises(Unprocessable, match="no audio or video"):
        subscribe(
            publish("obs30").tracks,
            "v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nt=0 0\na=group:BUNDLE 0\n"
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\na=mid:0\n",
        )


# -- fuzz ------------------------------------------------------------------------------------


def test_fuzzed_offers_only_raise_400_or_422() -> None:
    try:
        from tests.unit.test_sdp import mutate
    except ImportError:
        from test_sdp import mutate  # type: ignore[no-redef]

    rng = random.Random(424242)
    published = publish("chrome_simulcast").tracks + publish("obs30").tracks
    answered = 0
    for _ in range(400):
        text = rng.choice(list(samples.ALL_OFFERS.values()))
        for _ in range(rng.randrange(1, 4)):
            text = mutate(text, rng)
        for call in (
            lambda t=text: neg.answer_publish(t, LOCAL).sdp,
            lambda t=text: neg.answer_subscribe(t, LOCAL, published, ssrcs(), "s").sdp,
        ):
            try:
                out = call()
            except (BadRequest, Unprocessable):
                continue
            answered += 1
            sdp.parse(out)
    assert answered > 100


def test_answer_sections_carry_no_stray_attributes() -> None:
    answer: MediaSection = sdp.parse(publish("chrome_simulcast").sdp).media[1]
    assert answer.other == [] and answer.ssrcs == [] and answer.msid is None and answer.rtcp_fb_any == []
