"""SDP for the packet-level test clients: offers as a browser would write them, and just
enough answer parsing to connect (RFC 8866 syntax, RFC 8829 JSEP conventions, RFC 8843
BUNDLE, RFC 8851/8853 rid + simulcast, RFC 8842 DTLS attributes, RFC 8839 ICE attributes).

Kept independent of `sfu.wire.sdp` on purpose: the client must drive other servers, and a
second reading of the same text catches the server parser's mistakes instead of sharing them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

EXT_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
EXT_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
EXT_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
EXT_TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
EXT_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

# extension ids as Chrome numbers them
EXT_IDS = {EXT_MID: 4, EXT_RID: 10, EXT_REPAIRED_RID: 11, EXT_TWCC: 3}

# payload types as Chrome numbers them
PT_OPUS = 111
PT_VP8, PT_VP8_RTX = 96, 97
PT_H264, PT_H264_RTX = 102, 103
PT_VP9, PT_VP9_RTX = 98, 99
PT_AV1, PT_AV1_RTX = 45, 46

VIDEO_FEEDBACK = ("goog-remb", "transport-cc", "ccm fir", "nack", "nack pli")
H264_FMTP = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
VP9_FMTP = "profile-id=0"
# video codec name -> (payload type, its RTX payload type, rtpmap, default fmtp)
VIDEO_CODECS = {
    "VP8": (PT_VP8, PT_VP8_RTX, "VP8/90000", None),
    "H264": (PT_H264, PT_H264_RTX, "H264/90000", H264_FMTP),
    "VP9": (PT_VP9, PT_VP9_RTX, "VP9/90000", VP9_FMTP),
    "AV1": (PT_AV1, PT_AV1_RTX, "AV1/90000", None),
}


@dataclass(slots=True)
class Codec:
    pt: int
    name: str
    clock_rate: int
    channels: int | None = None
    fmtp: str = ""
    feedback: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Media:
    kind: str
    port: int
    mid: str | None = None
    direction: str = "sendrecv"
    codecs: list[Codec] = field(default_factory=list)
    extmaps: dict[str, int] = field(default_factory=dict)  # uri -> id
    ssrcs: list[int] = field(default_factory=list)
    ssrc_groups: list[tuple[str, list[int]]] = field(default_factory=list)
    rids: list[tuple[str, str]] = field(default_factory=list)  # (rid, direction)
    simulcast: str | None = None
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    candidates: list[Candidate] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return self.port == 0 and not any(name == "bundle-only" for name, _ in self.attributes)

    def codec(self, name: str) -> Codec | None:
        return next((c for c in self.codecs if c.name.lower() == name.lower()), None)


@dataclass(slots=True)
class Candidate:
    foundation: str
    component: int
    transport: str
    priority: int
    host: str
    port: int
    type: str


@dataclass(slots=True)
class Answer:
    media: list[Media]
    ice_ufrag: str
    ice_pwd: str
    fingerprints: list[tuple[str, str]]
    candidates: list[Candidate]
    ice_lite: bool
    setup: str | None

    def kind(self, kind: str) -> Media | None:
        return next((m for m in self.media if m.kind == kind and not m.rejected), None)


class SdpError(ValueError):
    pass


def _candidate(value: str) -> Candidate:
    parts = value.split()
    if len(parts) < 8 or parts[6] != "typ":
        raise SdpError(f"bad candidate: {value!r}")
    return Candidate(parts[0], int(parts[1]), parts[2].lower(), int(parts[3]), parts[4], int(parts[5]), parts[7])


def parse_answer(text: str) -> Answer:
    """The parts of an answer a client needs; session-level ICE/DTLS values are the
    defaults for every media section (RFC 8839 §5.4, RFC 8842 §5)."""
    session: dict[str, object] = {"fingerprints": [], "candidates": [], "ice_lite": False}
    media: list[Media] = []
    current: Media | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            if len(parts) < 3:
                raise SdpError(f"bad m-line: {line!r}")
            current = Media(kind=parts[0], port=int(parts[1]))
            media.append(current)
            continue
        if kind != "a":
            continue
        name, _, attr = value.partition(":")
        attr_value = attr if _ else None
        target = current
        if name == "ice-lite":
            session["ice_lite"] = True
        elif name in ("ice-ufrag", "ice-pwd", "setup"):
            if target is None:
                session[name] = attr
            else:
                setattr(target, name.replace("-", "_"), attr)
        elif name == "fingerprint":
            algorithm, _, digest = attr.partition(" ")
            entry = (algorithm.lower(), digest.strip().upper())
            (session["fingerprints"] if target is None else target.fingerprints).append(entry)  # type: ignore[union-attr,attr-defined]
        elif name == "candidate":
            cand = _candidate(attr)
            (session["candidates"] if target is None else target.candidates).append(cand)  # type: ignore[union-attr,attr-defined]
        elif target is None:
            continue
        elif name == "mid":
            target.mid = attr
        elif name in ("sendrecv", "sendonly", "recvonly", "inactive"):
            target.direction = name
        elif name == "rtpmap":
            pt, _, encoding = attr.partition(" ")
            pieces = encoding.split("/")
            target.codecs.append(
                Codec(int(pt), pieces[0], int(pieces[1]) if len(pieces) > 1 else 90000,
                      int(pieces[2]) if len(pieces) > 2 else None)
            )
        elif name in ("fmtp", "rtcp-fb"):
            pt_text, _, rest = attr.partition(" ")
            codec = next((c for c in target.codecs if str(c.pt) == pt_text), None)
            if codec is not None:
                if name == "fmtp":
                    codec.fmtp = rest
                else:
                    codec.feedback.append(rest)
        elif name == "extmap":
            ext_id, _, rest = attr.partition(" ")
            uri = rest.split()[0] if rest.split() else ""
            target.extmaps[uri] = int(ext_id.split("/")[0])
        elif name == "ssrc":
            ssrc = int(attr.split()[0])
            if ssrc not in target.ssrcs:
                target.ssrcs.append(ssrc)
        elif name == "ssrc-group":
            parts = attr.split()
            target.ssrc_groups.append((parts[0], [int(s) for s in parts[1:]]))
        elif name == "rid":
            parts = attr.split()
            target.rids.append((parts[0], parts[1] if len(parts) > 1 else ""))
        elif name == "simulcast":
            target.simulcast = attr
        else:
            target.attributes.append((name, attr_value))
    for m in media:
        m.ice_ufrag = m.ice_ufrag or session.get("ice-ufrag")  # type: ignore[assignment]
        m.ice_pwd = m.ice_pwd or session.get("ice-pwd")  # type: ignore[assignment]
        m.setup = m.setup or session.get("setup")  # type: ignore[assignment]
        if not m.fingerprints:
            m.fingerprints = list(session["fingerprints"])  # type: ignore[call-overload]
    live = [m for m in media if not m.rejected] or media
    first = live[0] if live else None
    ufrag = first.ice_ufrag if first else session.get("ice-ufrag")
    pwd = first.ice_pwd if first else session.get("ice-pwd")
    if not ufrag or not pwd:
        raise SdpError("answer has no ice-ufrag/ice-pwd")
    fingerprints = first.fingerprints if first else list(session["fingerprints"])  # type: ignore[call-overload]
    if not fingerprints:
        raise SdpError("answer has no fingerprint")
    candidates = list(session["candidates"])  # type: ignore[call-overload]
    for m in live:
        for cand in m.candidates:
            if all((c.host, c.port, c.transport) != (cand.host, cand.port, cand.transport) for c in candidates):
                candidates.append(cand)
    return Answer(media, str(ufrag), str(pwd), fingerprints, candidates,
                  bool(session["ice_lite"]), first.setup if first else None)


# ---------------------------------------------------------------------------------------
# offers


def ice_credentials() -> tuple[str, str]:
    """RFC 8839 §5.4: ufrag >= 4 chars, pwd >= 22 chars of ice-char."""
    return secrets.token_hex(4), secrets.token_hex(12)


@dataclass(slots=True)
class MediaOffer:
    kind: str  # "audio" or "video"
    mid: str
    direction: str  # "sendonly" or "recvonly"
    codecs: list[str]  # "opus", "VP8", "H264", "VP9", "AV1"
    rtx: bool = False
    ssrcs: list[int] = field(default_factory=list)  # send SSRCs (no simulcast)
    rids: list[str] = field(default_factory=list)  # send simulcast rids
    extensions: list[str] = field(default_factory=list)
    msid: tuple[str, str] | None = None
    cname: str = ""
    fmtp: dict[str, str] = field(default_factory=dict)  # codec name -> fmtp replacing the default


def _codec_lines(name: str, rtx: bool, kind: str, fmtp_override: str | None = None) -> tuple[list[int], list[str]]:
    if name.lower() == "opus":
        return [PT_OPUS], [
            f"a=rtpmap:{PT_OPUS} opus/48000/2",
            f"a=rtcp-fb:{PT_OPUS} transport-cc",
            f"a=fmtp:{PT_OPUS} minptime=10;useinbandfec=1",
        ]
    if name.upper() not in VIDEO_CODECS:
        raise ValueError(f"unsupported codec {name!r}")
    pt, rtx_pt, rtpmap, fmtp = VIDEO_CODECS[name.upper()]
    if fmtp_override is not None:
        fmtp = fmtp_override
    lines = [f"a=rtpmap:{pt} {rtpmap}"] + [f"a=rtcp-fb:{pt} {fb}" for fb in VIDEO_FEEDBACK]
    if fmtp:
        lines.append(f"a=fmtp:{pt} {fmtp}")
    pts = [pt]
    if rtx:
        pts.append(rtx_pt)
        lines += [f"a=rtpmap:{rtx_pt} rtx/90000", f"a=fmtp:{rtx_pt} apt={pt}"]
    return pts, lines


def build_offer(
    sections: list[MediaOffer], *, ice_ufrag: str, ice_pwd: str, fingerprint_sha256: str,
) -> str:
    """A BUNDLE offer with no candidates (like OBS: the server learns our address from
    our checks), setup:actpass, rtcp-mux, rtcp-rsize, extmap-allow-mixed."""
    session_id = secrets.randbits(62)
    lines = [
        "v=0",
        f"o=- {session_id} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE " + " ".join(s.mid for s in sections),
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS",
    ]
    for section in sections:
        pts: list[int] = []
        codec_lines: list[str] = []
        for codec in section.codecs:
            more_pts, more_lines = _codec_lines(codec, section.rtx, section.kind, section.fmtp.get(codec))
            pts += more_pts
            codec_lines += more_lines
        lines += [
            f"m={section.kind} 9 UDP/TLS/RTP/SAVPF " + " ".join(map(str, pts)),
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            f"a=ice-ufrag:{ice_ufrag}",
            f"a=ice-pwd:{ice_pwd}",
            f"a=fingerprint:sha-256 {fingerprint_sha256}",
            "a=setup:actpass",
            f"a=mid:{section.mid}",
        ]
        lines += [f"a=extmap:{EXT_IDS[uri]} {uri}" for uri in section.extensions]
        lines.append(f"a={section.direction}")
        if section.msid:
            lines.append(f"a=msid:{section.msid[0]} {section.msid[1]}")
        lines += ["a=rtcp-mux", "a=rtcp-rsize"] + codec_lines
        if section.rids:
            lines += [f"a=rid:{rid} send" for rid in section.rids]
            lines.append("a=simulcast:send " + ";".join(section.rids))
        if section.ssrcs and not section.rids:
            if len(section.ssrcs) == 2:
                lines.append(f"a=ssrc-group:FID {section.ssrcs[0]} {section.ssrcs[1]}")
            for ssrc in section.ssrcs:
                lines.append(f"a=ssrc:{ssrc} cname:{section.cname}")
                if section.msid:
                    lines.append(f"a=ssrc:{ssrc} msid:{section.msid[0]} {section.msid[1]}")
    return "\r\n".join(lines) + "\r\n"
