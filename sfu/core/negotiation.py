"""SDP answers for WHIP publishers and WHEP viewers: pure functions, no I/O, no clock.

Inputs: the client's offer text, the server's `LocalTransport` (ICE-lite credentials, DTLS
fingerprint, candidates) and, for viewers, the stream's `PublishedTrack`s. Outputs: the answer text
plus what was negotiated (`RemoteTransport`, tracks with payload types, extension ids, SSRCs).

The server is always ICE-lite and the DTLS server (`a=setup:passive`), bundles everything on one
transport, and forwards codecs without transcoding, so an answer only ever contains the codec the
publisher actually sends. The rules encode real clients' behaviour (see DESIGN.md "Interop rules"):
m-lines keep the offer's count, order and mids (rejected ones as port 0 + inactive), H.264 is never
refused over profile-level-id, every simulcast rid is accepted (OBS aborts otherwise). A viewer's
section the stream cannot feed (a kind it lacks, a send-only section) is answered inactive inside
the BUNDLE group, not rejected: Chromium takes the bundle's transport from the first section and
refuses an answer whose first section has port 0 ("Failed to setup RTCP mux").

Errors: an offer that does not parse raises `BadRequest` (400); one that parses but cannot be
served raises `Unprocessable` (422) with the reason. Never 406 (WHEP reserves it for counter-offers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from sfu.errors import Unprocessable
from sfu.wire import sdp
from sfu.wire.sdp import Codec, Extmap, MediaSection, Rid, SessionDescription, Simulcast, SsrcAttr, SsrcGroup

__all__ = [
    "CodecSpec",
    "LocalTransport",
    "PublishAnswer",
    "PublishedTrack",
    "RemoteTransport",
    "SubscribeAnswer",
    "SubscribedTrack",
    "answer_publish",
    "answer_subscribe",
]

# RTP header extension URIs (RFC 8285 registry names as browsers spell them).
URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"  # RFC 8843 §15.2
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"  # RFC 8852 §3.1
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"  # RFC 8852 §3.2
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"  # RFC 6464
URI_VIDEO_ORIENTATION = "urn:3gpp:video-orientation"  # 3GPP TS 26.114 §7.4.5
URI_DEPENDENCY_DESCRIPTOR = "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension"

# Extensions read from publishers.
PUBLISH_EXTENSIONS = frozenset(
    {
        URI_MID,
        URI_RID,
        URI_REPAIRED_RID,
        URI_ABS_SEND_TIME,
        URI_TWCC,
        URI_AUDIO_LEVEL,
        URI_VIDEO_ORIENTATION,
        URI_DEPENDENCY_DESCRIPTOR,
    }
)
# Extensions written to viewers: these three the server makes itself...
SUBSCRIBE_OWN_EXTENSIONS = frozenset({URI_MID, URI_ABS_SEND_TIME, URI_TWCC})
# ...these it copies from the publisher's packets, so only when the publisher negotiated them.
SUBSCRIBE_COPIED_EXTENSIONS = frozenset({URI_AUDIO_LEVEL, URI_VIDEO_ORIENTATION, URI_DEPENDENCY_DESCRIPTOR})

# Codecs the server forwards: lower-case rtpmap name -> (canonical name, kind, clock rate).
FORWARDED_CODECS: dict[str, tuple[str, str, int]] = {
    "opus": ("opus", "audio", 48000),
    "vp8": ("VP8", "video", 90000),
    "vp9": ("VP9", "video", 90000),
    "h264": ("H264", "video", 90000),
    "av1": ("AV1", "video", 90000),
}
# RTCP feedback the server acts on (RFC 4585 nack/pli, RFC 5104 fir, REMB, transport-cc).
ALLOWED_FEEDBACK = ("nack", "nack pli", "ccm fir", "goog-remb", "transport-cc")
# Payload formats that are not media codecs, left out of "offer has ..." messages.
_AUXILIARY = frozenset({"rtx", "red", "ulpfec", "flexfec-03", "cn", "telephone-event"})
# RFC 8122 §5 hash functions a DTLS stack can check.
_FINGERPRINT_HASHES = frozenset({"sha-1", "sha-224", "sha-256", "sha-384", "sha-512"})
_PROTOCOL = "UDP/TLS/RTP/SAVPF"  # RFC 5764 §8 with RFC 8839 ICE over UDP: the only one served
_ANY_ADDRESS = "IN IP4 0.0.0.0"
_DISCARD_PORT = 9  # RFC 8840 §4.1.2: port when candidates carry the real addresses


@dataclass(frozen=True)
class LocalTransport:
    """What the server puts in every answer."""

    ice_ufrag: str
    ice_pwd: str
    fingerprint: tuple[str, str]  # ("sha-256", "AB:CD:...")
    candidates: list[str]  # full "candidate:..." attribute values (server builds them)


@dataclass(frozen=True)
class RemoteTransport:
    """What the client's offer said about its transport."""

    ice_ufrag: str
    ice_pwd: str
    fingerprints: list[tuple[str, str]]
    setup: str
    candidates: list[str]


@dataclass(frozen=True)
class CodecSpec:
    name: str  # canonical: "opus", "VP8", "VP9", "H264", "AV1"
    clock_rate: int
    channels: int | None
    payload_type: int  # in the publisher's numbering
    fmtp: str | None  # verbatim from the publisher
    rtx_payload_type: int | None
    rtcp_fb: tuple[str, ...]
    red_payload_type: int | None = None  # Opus RED (audio/red) when negotiated


@dataclass(frozen=True)
class PublishedTrack:
    mid: str
    kind: str  # "audio" | "video"
    codec: CodecSpec
    extensions: dict[str, int]  # extension URI -> id as negotiated with the publisher
    rids: tuple[str, ...]  # simulcast rids in offer order; () without simulcast
    ssrcs: tuple[int, ...]  # declared media SSRCs in order (a=ssrc-group:SIM order if present)
    rtx_ssrcs: dict[int, int]  # media SSRC -> RTX SSRC (a=ssrc-group:FID)
    track_id: str  # msid track part, or generated
    stream_msid: str | None = None  # msid stream part as the publisher declared it, if any


@dataclass(frozen=True)
class PublishAnswer:
    sdp: str
    remote: RemoteTransport
    tracks: tuple[PublishedTrack, ...]


@dataclass(frozen=True)
class SubscribedTrack:
    mid: str  # the viewer's mid
    source_index: int  # index into the published tracks list
    payload_type: int  # viewer's PT for the source codec
    rtx_payload_type: int | None  # viewer's RTX PT (None if the viewer did not offer RTX for it)
    red_payload_type: int | None
    extensions: dict[str, int]  # URI -> viewer id, only for the extensions the server writes
    ssrc: int
    rtx_ssrc: int | None  # server-chosen, announced in the answer with a=ssrc cname/msid
    nack: bool
    pli: bool
    fir: bool
    transport_cc: bool
    remb: bool


@dataclass(frozen=True)
class SubscribeAnswer:
    sdp: str
    remote: RemoteTransport
    tracks: tuple[SubscribedTrack, ...]


# ---------------------------------------------------------------------------------------------
# Shared offer checks and answer skeleton


@dataclass
class _Offer:
    desc: SessionDescription
    usable: list[bool]  # per m= section: audio/video, not rejected by the offerer, inside BUNDLE
    remote: RemoteTransport
    bundled: bool = field(default=False)


def _is_live(m: MediaSection) -> bool:
    """Port 0 means 'rejected', except with a=bundle-only (RFC 8843 §6; GStreamer max-bundle)."""
    return m.port != 0 or m.bundle_only


def _check_offer(offer: str) -> _Offer:
    desc = sdp.parse(offer)
    live = [m.kind in ("audio", "video") and _is_live(m) for m in desc.media]
    if not any(live):
        raise Unprocessable("no usable media: offer has no audio or video section")
    for m, ok in zip(desc.media, live, strict=True):
        if not ok:
            continue
        if m.protocol.upper() != _PROTOCOL:
            raise Unprocessable(f"m={m.kind} uses {m.protocol}; only {_PROTOCOL} is supported")
        if m.mid is None:
            raise Unprocessable(f"m={m.kind} section has no a=mid (BUNDLE requires one)")
    bundle = desc.bundle_group()
    # One transport only: media outside the BUNDLE group is rejected in place.
    usable = [ok and (bundle is None or m.mid in bundle.mids) for m, ok in zip(desc.media, live, strict=True)]
    sections = [m for m, ok in zip(desc.media, usable, strict=True) if ok]
    if not sections:
        raise Unprocessable("no usable media: no audio or video section is in the offer's BUNDLE group")
    mids = [m.mid for m in desc.media if m.mid is not None]
    if len(mids) != len(set(mids)):
        raise Unprocessable("offer repeats an a=mid value")
    first = sections[0]
    ufrag = first.ice_ufrag or desc.ice_ufrag
    pwd = first.ice_pwd or desc.ice_pwd
    if not ufrag:
        raise Unprocessable("offer has no a=ice-ufrag")
    if not pwd:
        raise Unprocessable("offer has no a=ice-pwd")
    fingerprints = first.fingerprints or desc.fingerprints
    if not fingerprints:
        raise Unprocessable("offer has no a=fingerprint")
    if not any(alg.lower() in _FINGERPRINT_HASHES for alg, _ in fingerprints):
        algs = ", ".join(alg for alg, _ in fingerprints)
        raise Unprocessable(f"offer's a=fingerprint uses {algs}; need sha-256, sha-384, sha-512 or sha-1")
    # RFC 4145 §4: a missing a=setup means 'active'; the server can only be the DTLS server.
    setup = (first.setup or desc.setup or "active").lower()
    if setup not in ("actpass", "active"):
        raise Unprocessable(
            f"offer has a=setup:{setup}; the server is the DTLS server, so the client must be actpass or active"
        )
    candidates: list[str] = []
    for m in desc.media:
        for c in m.candidates:
            if c not in candidates:
                candidates.append(c)
    remote = RemoteTransport(ufrag, pwd, list(fingerprints), setup, candidates)
    return _Offer(desc, usable, remote, bundled=bundle is not None)


def _session(offer: _Offer, local: LocalTransport) -> SessionDescription:
    digest = hashlib.sha256(local.ice_ufrag.encode()).digest()
    session_id = int.from_bytes(digest[:7], "big")  # RFC 8866 §5.2: any numeric id; stable per session
    return SessionDescription(
        origin=f"- {session_id} 1 IN IP4 0.0.0.0",
        session_name="-",
        timing="0 0",
        ice_lite=True,
        extmap_allow_mixed=offer.desc.extmap_allow_mixed,
    )


def _rejected(m: MediaSection, local: LocalTransport) -> MediaSection:
    """RFC 8866 §5.14 / RFC 3264 §6: rejected in place, keeping its mid.

    ICE credentials and the fingerprint are repeated here although the section carries no media:
    some stacks (aiortc) refuse an answer with any m-section lacking them; browsers ignore them.
    """
    first = m.codecs[:1]
    return MediaSection(
        kind=m.kind,
        port=0,
        protocol=m.protocol,
        formats=[str(first[0].pt)] if first else (m.formats[:1] or ["0"]),
        codecs=[replace(first[0], rtcp_fb=[])] if first else [],
        connection=_ANY_ADDRESS,
        mid=m.mid,
        direction="inactive",
        ice_ufrag=local.ice_ufrag,
        ice_pwd=local.ice_pwd,
        fingerprints=[local.fingerprint],
        setup="passive",
        rtcp_mux=True,
    )


def _idle(m: MediaSection, local: LocalTransport) -> MediaSection:
    """A bundled section that carries nothing: accepted inactive (RFC 3264 §6.1) in the BUNDLE group.

    Rejecting it (port 0) would take it out of the bundle (RFC 8843 §7.3.3); when it is the first
    section, the one whose transport the bundle uses, Chromium refuses the whole answer ("Failed to
    setup RTCP mux" for the next section), whatever order the viewer added its transceivers in.
    The offer's first media codec is echoed without feedback, and no header extensions.
    """
    section = _accepted(m, local, "inactive")
    media = [c for c in m.codecs if c.explicit and c.name.lower() not in _AUXILIARY]
    first = (media or m.codecs)[:1]
    section.codecs = [replace(first[0], rtcp_fb=[])] if first else []
    section.formats = [str(first[0].pt)] if first else (m.formats[:1] or ["0"])
    return section


def _accepted(m: MediaSection, local: LocalTransport, direction: str) -> MediaSection:
    candidates = [c if c.startswith("candidate:") else f"candidate:{c}" for c in local.candidates]
    return MediaSection(
        kind=m.kind,
        port=_DISCARD_PORT,
        protocol=m.protocol,
        connection=_ANY_ADDRESS,
        mid=m.mid,
        direction=direction,
        ice_ufrag=local.ice_ufrag,
        ice_pwd=local.ice_pwd,
        fingerprints=[local.fingerprint],
        setup="passive",
        candidates=candidates,
        end_of_candidates=True,
        rtcp_mux=True,
        rtcp_rsize=m.rtcp_rsize,
        extmap_allow_mixed=m.extmap_allow_mixed,
    )


def _finish(answer: SessionDescription, offer: _Offer) -> str:
    accepted = [m.mid for m in answer.media if m.port != 0 and m.mid is not None]
    if offer.bundled:
        answer.groups.append(sdp.Group("BUNDLE", accepted))
    elif len(accepted) > 1:
        # Without BUNDLE each section would need its own ICE/DTLS transport; the server has one.
        raise Unprocessable("offer does not BUNDLE its media sections (a=group:BUNDLE is required)")
    return answer.to_string()


def _feedback(codec: Codec, m: MediaSection) -> tuple[str, ...]:
    out: list[str] = []
    for fb in [*codec.rtcp_fb, *m.rtcp_fb_any]:
        fb = fb.lower()
        if fb in ALLOWED_FEEDBACK and fb not in out:
            out.append(fb)
    return tuple(out)


def _offered_extmaps(m: MediaSection, desc: SessionDescription) -> list[Extmap]:
    """Section extmaps, then session-level ones (RFC 8285 §5) not overridden by the section."""
    uris = {e.uri for e in m.extmaps}
    return [*m.extmaps, *(e for e in desc.extmaps if e.uri not in uris)]


def _negotiate_extensions(
    m: MediaSection, desc: SessionDescription, wanted: Callable[[str], bool], server_sends: bool
) -> list[Extmap]:
    """Echo the offered ids of the wanted URIs (RFC 8285 §6), with the answer's direction."""
    unusable = "recvonly" if not server_sends else "sendonly"  # offerer-side direction we can't use
    out: list[Extmap] = []
    used_ids: set[int] = set()
    for e in _offered_extmaps(m, desc):
        if not wanted(e.uri) or e.direction in (unusable, "inactive") or e.id in used_ids:
            continue
        if any(x.uri == e.uri for x in out):
            continue
        direction = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(e.direction or "")
        out.append(Extmap(e.id, e.uri, direction))
        used_ids.add(e.id)
    return out


def _offered_names(sections: Sequence[MediaSection]) -> list[str]:
    names: list[str] = []
    for m in sections:
        for c in m.codecs:
            if c.name and c.name.lower() not in _AUXILIARY and c.name not in names:
                names.append(c.name)
    return names


# ---------------------------------------------------------------------------------------------
# WHIP: publisher offer -> recvonly answer


def _publish_codec(m: MediaSection) -> tuple[Codec, Codec | None, Codec | None] | None:
    """First offered codec the server forwards (never refusing H.264 over its profile), its RTX and RED."""
    for codec in m.codecs:
        entry = FORWARDED_CODECS.get(codec.name.lower())
        if not codec.explicit or entry is None:
            continue
        _, kind, rate = entry
        if kind != m.kind or codec.clock_rate != rate:
            continue
        if entry[0] == "opus" and codec.channels not in (None, 2):
            continue  # RFC 7587 §7: always opus/48000/2
        rtx = next((c for c in m.codecs if c.is_rtx and c.apt == codec.pt), None)
        red = None
        if m.kind == "audio":
            red = next((c for c in m.codecs if c.name.lower() == "red" and _red_wraps(c, codec.pt)), None)
        return codec, rtx, red
    return None


def _red_wraps(red: Codec, pt: int) -> bool:
    """RFC 2198 §5 fmtp '111/111': every redundant block is the primary codec (or no fmtp)."""
    if red.fmtp is None or not red.fmtp.strip():
        return True
    return all(part.strip() == str(pt) for part in red.fmtp.split("/"))


def _publish_ssrcs(m: MediaSection) -> tuple[tuple[int, ...], dict[int, int]]:
    """Media SSRCs (SIM group order if any, else declaration order minus FID/FEC repairs), RTX map."""
    rtx: dict[int, int] = {}
    repair: set[int] = set()
    sim: list[int] | None = None
    for g in m.ssrc_groups:
        semantics = g.semantics.upper()
        if semantics == "FID" and len(g.ssrcs) >= 2:
            rtx[g.ssrcs[0]] = g.ssrcs[1]
            repair.update(g.ssrcs[1:])
        elif semantics in ("FEC-FR", "FEC") and len(g.ssrcs) >= 2:
            repair.update(g.ssrcs[1:])
        elif semantics == "SIM" and sim is None:
            sim = list(g.ssrcs)
    if sim is not None:
        return tuple(sim), rtx
    ssrcs: list[int] = []
    for attr in m.ssrcs:
        if attr.ssrc not in repair and attr.ssrc not in ssrcs:
            ssrcs.append(attr.ssrc)
    return tuple(ssrcs), rtx


def _msid(m: MediaSection) -> tuple[str | None, str | None]:
    """(stream id, track id) from a=msid, else from a=ssrc:<n> msid: (RFC 8830; GStreamer uses the latter)."""
    text = m.msid
    if text is None:
        text = next((a.value for a in m.ssrcs if a.name == "msid" and a.value), None)
    if not text:
        return None, None
    parts = text.split()
    return parts[0], (parts[1] if len(parts) > 1 else None)


def _answer_simulcast(m: MediaSection) -> tuple[list[Rid], Simulcast | None, tuple[str, ...]]:
    """Accept every rid the publisher sends (RFC 8853 §5.3: answer recv with the same list)."""
    send_rids = [r.id for r in m.rids if r.direction == "send"]
    rids = [Rid(rid, "recv") for rid in send_rids]
    simulcast = None
    offered = m.simulcast
    streams = None
    if offered is not None and offered.direction == "send":
        streams = offered.streams
    elif offered is not None and offered.direction == "recv" and offered.reverse_streams is not None:
        streams = offered.reverse_streams
    if streams is not None:
        kept = [[alt for alt in alts if alt.lstrip("~") in send_rids] for alts in streams]
        kept = [alts for alts in kept if alts]
        if kept:
            simulcast = Simulcast("recv", kept)
    return rids, simulcast, tuple(send_rids)


def answer_publish(offer: str, local: LocalTransport) -> PublishAnswer:
    """Answer a WHIP offer: recvonly for what the publisher sends, in the offer's m-line order."""
    checked = _check_offer(offer)
    desc = checked.desc
    answer = _session(checked, local)
    tracks: list[PublishedTrack] = []
    considered: list[MediaSection] = []
    for m, usable in zip(desc.media, checked.usable, strict=True):
        choice = _publish_codec(m) if usable else None
        if usable:
            considered.append(m)
        if choice is None:
            answer.media.append(_rejected(m, local))
            continue
        codec, rtx, red = choice
        sends = m.effective_direction(desc.direction) in ("sendonly", "sendrecv")
        section = _accepted(m, local, "recvonly" if sends else "inactive")
        feedback = _feedback(codec, m)
        section.codecs = [Codec(codec.pt, codec.name, codec.clock_rate, codec.channels, codec.fmtp, list(feedback))]
        if red is not None:
            section.codecs.append(Codec(red.pt, red.name, red.clock_rate, red.channels, red.fmtp))
        if rtx is not None:
            section.codecs.append(Codec(rtx.pt, rtx.name, rtx.clock_rate, rtx.channels, rtx.fmtp))
        section.formats = [str(c.pt) for c in section.codecs]
        section.extmaps = _negotiate_extensions(m, desc, PUBLISH_EXTENSIONS.__contains__, server_sends=False)
        rids: tuple[str, ...] = ()
        if sends:
            section.rids, section.simulcast, rids = _answer_simulcast(m)
        answer.media.append(section)
        if not sends:
            continue  # answered inactive: nothing will arrive, so no track
        ssrcs, rtx_ssrcs = _publish_ssrcs(m)
        stream_msid, track_id = _msid(m)
        assert m.mid is not None  # checked in _check_offer
        tracks.append(
            PublishedTrack(
                mid=m.mid,
                kind=m.kind,
                codec=CodecSpec(
                    name=FORWARDED_CODECS[codec.name.lower()][0],
                    clock_rate=codec.clock_rate,
                    channels=codec.channels,
                    payload_type=codec.pt,
                    fmtp=codec.fmtp,
                    rtx_payload_type=rtx.pt if rtx else None,
                    rtcp_fb=feedback,
                    red_payload_type=red.pt if red else None,
                ),
                extensions={e.uri: e.id for e in section.extmaps},
                rids=rids,
                ssrcs=ssrcs,
                rtx_ssrcs=rtx_ssrcs,
                track_id=track_id or f"{m.kind}-{m.mid}",
                stream_msid=stream_msid if stream_msid != "-" else None,
            )
        )
    if not tracks:
        if any(s.port != 0 for s in answer.media):
            raise Unprocessable("no usable media: no section of the offer sends (all recvonly or inactive)")
        names = ", ".join(_offered_names(considered)) or "nothing"
        raise Unprocessable(f"no usable media: the server forwards opus, VP8, VP9, H264, AV1; offer has {names}")
    return PublishAnswer(_finish(answer, checked), checked.remote, tuple(tracks))


# ---------------------------------------------------------------------------------------------
# WHEP: viewer offer -> sendonly answer


def _profile_key(name: str, params: dict[str, str]) -> str | None:
    """The parameter that tells decoders apart within one codec name (defaults per RFC)."""
    if name == "H264":
        return params.get("profile-level-id", "42000a").lower()  # RFC 6184 §8.1 default
    if name == "VP9":
        return params.get("profile-id", "0")  # RFC 9628 §6
    if name == "AV1":
        return params.get("profile", "0")  # AV1 RTP spec §7.2
    return None


def _viewer_codec(m: MediaSection, spec: CodecSpec) -> Codec | None:
    """Viewer's PT for the publisher's codec: same name, rate (and opus channels; H.264 mode).

    Prefers a PT with the publisher's profile, else any PT of the codec: a decoder handles other
    profiles far better than no video at all (OBS always says 42e01f, whatever it encodes).
    """
    matches = []
    for c in m.codecs:
        if not c.explicit or c.name.lower() != spec.name.lower() or c.clock_rate != spec.clock_rate:
            continue
        if spec.name == "opus" and (c.channels or 2) != (spec.channels or 2):
            continue
        if spec.name == "H264":
            source_mode = _params(spec.fmtp).get("packetization-mode", "0")  # RFC 6184 §8.1 default 0
            if c.fmtp_params().get("packetization-mode", "0") != source_mode:
                continue
        matches.append(c)
    if not matches:
        return None
    wanted = _profile_key(spec.name, _params(spec.fmtp))
    for c in matches:
        if _profile_key(spec.name, c.fmtp_params()) == wanted:
            return c
    return matches[0]


def _params(fmtp: str | None) -> dict[str, str]:
    return Codec(0, "", 0, fmtp=fmtp).fmtp_params()


def _viewer_extensions(m: MediaSection, desc: SessionDescription, source: PublishedTrack) -> list[Extmap]:
    def wanted(uri: str) -> bool:
        if uri in SUBSCRIBE_OWN_EXTENSIONS:
            return True
        return uri in SUBSCRIBE_COPIED_EXTENSIONS and uri in source.extensions

    return _negotiate_extensions(m, desc, wanted, server_sends=True)


def answer_subscribe(
    offer: str,
    local: LocalTransport,
    published: Sequence[PublishedTrack],
    new_ssrc: Callable[[], int],
    stream_id: str,
    *,
    cname: str | None = None,
) -> SubscribeAnswer:
    """Answer a WHEP offer: each section takes the next unused published track of its kind.

    `new_ssrc()` supplies the SSRCs the server sends with (unique per viewer session); `cname`
    (default `stream_id`) is shared by the viewer's tracks so that they are played in sync.
    """
    checked = _check_offer(offer)
    desc = checked.desc
    cname = cname or stream_id
    answer = _session(checked, local)
    answer.msid_semantic = f"WMS {stream_id}"
    used: set[int] = set()
    tracks: list[SubscribedTrack] = []
    wanting: list[MediaSection] = []  # sections that asked for media of a kind the stream has
    receiving: list[MediaSection] = []
    mismatched: list[MediaSection] = []  # sections whose kind the stream has, in no common codec
    for m, usable in zip(desc.media, checked.usable, strict=True):
        receives = usable and m.effective_direction(desc.direction) in ("recvonly", "sendrecv")
        match = None
        candidates: list[int] = []
        if receives:
            receiving.append(m)
            candidates = [i for i, t in enumerate(published) if t.kind == m.kind and i not in used]
            if candidates:
                wanting.append(m)
            for index in candidates:
                codec = _viewer_codec(m, published[index].codec)
                if codec is not None:
                    match = index, codec
                    break
        if match is None:
            if receives and candidates:
                mismatched.append(m)
            answer.media.append(_idle(m, local) if usable else _rejected(m, local))
            continue
        index, codec = match
        used.add(index)
        source = published[index]
        section, track = _subscribe_section(m, desc, local, source, index, codec, new_ssrc, stream_id, cname)
        answer.media.append(section)
        tracks.append(track)
    if not tracks:
        raise Unprocessable(_no_match_reason(published, receiving, wanting))
    if mismatched:
        # The stream has this kind but the viewer decodes none of its codecs: a clear 422 beats
        # a session that plays audio over a black screen.
        raise Unprocessable(_no_match_reason(published, receiving, mismatched))
    return SubscribeAnswer(_finish(answer, checked), checked.remote, tuple(tracks))


def _subscribe_section(
    m: MediaSection,
    desc: SessionDescription,
    local: LocalTransport,
    source: PublishedTrack,
    index: int,
    codec: Codec,
    new_ssrc: Callable[[], int],
    stream_id: str,
    cname: str,
) -> tuple[MediaSection, SubscribedTrack]:
    spec = source.codec
    rtx = next((c for c in m.codecs if c.is_rtx and c.apt == codec.pt), None)
    red = None
    if spec.red_payload_type is not None:
        red = next((c for c in m.codecs if c.name.lower() == "red" and _red_wraps(c, codec.pt)), None)
    feedback = _feedback(codec, m)
    section = _accepted(m, local, "sendonly")
    # H.264: tell the decoder the publisher's real profile (RFC 6184 §8.2.2 lets a sender's
    # sprop/profile differ from what the receiver listed); other codecs: the viewer's own fmtp.
    fmtp = spec.fmtp if spec.name == "H264" else codec.fmtp
    section.codecs = [Codec(codec.pt, codec.name, codec.clock_rate, codec.channels, fmtp, list(feedback))]
    if red is not None:
        section.codecs.append(Codec(red.pt, red.name, red.clock_rate, red.channels, red.fmtp))
    if rtx is not None:
        section.codecs.append(Codec(rtx.pt, rtx.name, rtx.clock_rate, rtx.channels, rtx.fmtp))
    section.formats = [str(c.pt) for c in section.codecs]
    section.extmaps = _viewer_extensions(m, desc, source)
    extensions = {e.uri: e.id for e in section.extmaps}
    ssrc = new_ssrc()
    rtx_ssrc = new_ssrc() if rtx is not None else None
    msid = f"{stream_id} {source.track_id}"
    section.msid = msid
    if rtx_ssrc is not None:
        section.ssrc_groups = [SsrcGroup("FID", [ssrc, rtx_ssrc])]  # RFC 4588 §8.1
    for s in (ssrc, rtx_ssrc):
        if s is not None:
            section.ssrcs += [SsrcAttr(s, "cname", cname), SsrcAttr(s, "msid", msid)]
    track = SubscribedTrack(
        mid=m.mid or "",
        source_index=index,
        payload_type=codec.pt,
        rtx_payload_type=rtx.pt if rtx else None,
        red_payload_type=red.pt if red else None,
        extensions=extensions,
        ssrc=ssrc,
        rtx_ssrc=rtx_ssrc,
        nack="nack" in feedback,
        pli="nack pli" in feedback,
        fir="ccm fir" in feedback,
        # TWCC needs both the feedback type and the sequence-number extension.
        transport_cc="transport-cc" in feedback and URI_TWCC in extensions,
        remb="goog-remb" in feedback,
    )
    return section, track


def _no_match_reason(
    published: Sequence[PublishedTrack], receiving: list[MediaSection], wanting: list[MediaSection]
) -> str:
    if not published:
        return "stream has no tracks"
    if not receiving:
        return "no usable media: offer has no recvonly or sendrecv audio/video section"
    if not wanting:
        have = ", ".join(sorted({t.kind for t in published}))
        asked = ", ".join(sorted({m.kind for m in receiving}))
        return f"stream has {have} only; offer asks for {asked}"
    kinds = {m.kind for m in wanting}
    sends: list[str] = []
    for t in published:
        if t.kind in kinds and t.codec.name not in sends:
            sends.append(t.codec.name)
    return f"stream sends {', '.join(sends)}; offer has {', '.join(_offered_names(wanting)) or 'no codec'}"
