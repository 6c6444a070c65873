"""SDP (RFC 8866) parsing and serialisation, lossless for what WebRTC offers carry.

Values only: no I/O, no clock. `parse(text)` turns an offer into a `SessionDescription`;
`SessionDescription.to_string()` writes it back (CRLF). Attributes the model does not name are kept
in `other` lists, in order, and written back, so `parse(d.to_string()) == d` for anything `parse`
returned. Malformed input raises `sfu.errors.BadRequest` with the line number and what was wrong.

Modelled (and why `aiortc.sdp` is not used): rid (RFC 8851), simulcast (RFC 8853),
extmap-allow-mixed and extmap directions/attributes (RFC 8285), bundle-only (RFC 8843),
rtcp-mux-only (RFC 8858), rtcp-rsize (RFC 5506), fmtp/rtcp-fb for static payload types without an
rtpmap. `parse_sdpfrag` reads `application/trickle-ice-sdpfrag` bodies (RFC 8840).

This module is the parser and the public import path. Beside it, one job each: `sdp_model` (the
values and their serialisation), `sdp_text` (limits, line syntax, numbers), `sdpfrag` (trickle
fragments); their public names are re-exported here.
"""

from __future__ import annotations

from sfu.errors import BadRequest

from .sdp_model import (
    Codec,
    Extmap,
    Group,
    MediaSection,
    Rid,
    SessionDescription,
    Simulcast,
    SsrcAttr,
    SsrcGroup,
)
from .sdp_text import _DIGITS, _TOKEN, MAX_SDP_CHARS, _lines, _need, _split_attr, _uint
from .sdpfrag import FragMedia, SdpFrag, is_valid_candidate, parse_sdpfrag

__all__ = [
    "Codec",
    "Extmap",
    "FragMedia",
    "Group",
    "MAX_SDP_CHARS",
    "MediaSection",
    "Rid",
    "SdpFrag",
    "SessionDescription",
    "Simulcast",
    "SsrcAttr",
    "SsrcGroup",
    "is_valid_candidate",
    "parse",
    "parse_sdpfrag",
]

MAX_MEDIA_SECTIONS = 256  # browsers cap transceivers well below this; bounds the work per offer

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

# RFC 3551 §6: static payload types that may appear without an a=rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int | None]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, None),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, None),
    26: ("JPEG", 90000, None),
    28: ("nv", 90000, None),
    31: ("H261", 90000, None),
    32: ("MPV", 90000, None),
    33: ("MP2T", 90000, None),
    34: ("H263", 90000, None),
}

def _pt(text: str) -> int:
    return _uint(text, 127, "payload type")


def parse(text: str | bytes) -> SessionDescription:
    """Parse a full SDP (offer or answer). Raises BadRequest naming the line and the problem."""
    lines = _lines(text)
    if not lines:
        raise BadRequest("empty SDP")
    number, letter, value = lines[0]
    if letter != "v":
        raise BadRequest(f"line {number}: SDP must start with v=0")
    if value.strip() != "0":
        raise BadRequest(f"line {number}: unsupported SDP version {value!r}")
    session = SessionDescription()
    media: MediaSection | None = None
    codecs: dict[int, Codec] = {}
    for number, letter, value in lines[1:]:
        try:
            if letter == "m":
                if media is not None:
                    _finish_media(media, codecs)
                if len(session.media) >= MAX_MEDIA_SECTIONS:
                    raise ValueError(f"more than {MAX_MEDIA_SECTIONS} media sections")
                media = _parse_m_line(value)
                codecs = {}
                session.media.append(media)
            elif media is None:
                _session_line(session, letter, value)
            else:
                _media_line(media, codecs, letter, value)
        except ValueError as exc:
            raise BadRequest(f"line {number}: {exc}") from None
    if media is not None:
        _finish_media(media, codecs)
    if not session.media:
        raise BadRequest("no media sections")
    return session


def _parse_m_line(value: str) -> MediaSection:
    fields = value.split()
    if not fields:
        raise ValueError("empty m= line")
    if len(fields) < 2:
        raise ValueError("m= line has no port")
    if len(fields) < 3:
        raise ValueError("m= line has no protocol")
    if len(fields) < 4:
        raise ValueError("m= line has no formats")
    kind = fields[0]
    if not _TOKEN.fullmatch(kind):
        raise ValueError(f"bad media type {kind!r}")
    port_text, _, count_text = fields[1].partition("/")
    port = _uint(port_text, 65535, "port")
    port_count = _uint(count_text, 65535, "port count") if count_text else None
    protocol = fields[2]
    formats = fields[3:]
    if "RTP/" in protocol.upper():
        for fmt in formats:
            _pt(fmt)
    return MediaSection(kind=kind, port=port, port_count=port_count, protocol=protocol, formats=formats)


def _session_line(s: SessionDescription, letter: str, value: str) -> None:
    if letter == "v":
        raise ValueError("second v= line")
    if letter == "o":
        if len(value.split()) != 6:
            raise ValueError("o= line needs 6 fields")
        s.origin = value
    elif letter == "s":
        s.session_name = value
    elif letter == "i":
        s.info = value
    elif letter == "c":
        s.connection = _connection(value)
    elif letter == "b":
        s.bandwidths.append(value)
    elif letter == "t":
        s.timing = value
    elif letter == "a":
        name, arg = _split_attr(value)
        if not _common_attr(s, name, arg):
            if name == "ice-lite":
                s.ice_lite = True
            elif name == "group":
                fields = _need(name, arg).split()
                s.groups.append(Group(fields[0], fields[1:]))
            elif name == "msid-semantic":
                s.msid_semantic = _need(name, arg)
            else:
                s.other.append((name, arg))
    else:
        s.other_lines.append((letter, value))


def _connection(value: str) -> str:
    if len(value.split()) != 3:
        raise ValueError("c= line needs 3 fields")
    return value


def _common_attr(target: SessionDescription | MediaSection, name: str, arg: str | None) -> bool:
    """Attributes valid at both levels; True when handled."""
    if name == "ice-ufrag":
        target.ice_ufrag = _need(name, arg)
    elif name == "ice-pwd":
        target.ice_pwd = _need(name, arg)
    elif name == "ice-options":
        target.ice_options = _need(name, arg)
    elif name == "fingerprint":
        fields = _need(name, arg).split()
        if len(fields) != 2:
            raise ValueError("a=fingerprint needs '<hash> <value>'")
        target.fingerprints.append((fields[0], fields[1]))
    elif name == "setup":
        target.setup = _need(name, arg)
    elif name in DIRECTIONS and arg is None:
        target.direction = name
    elif name == "extmap-allow-mixed" and arg is None:
        target.extmap_allow_mixed = True
    elif name == "extmap":
        target.extmaps.append(_extmap(_need(name, arg)))
    else:
        return False
    return True


def _extmap(value: str) -> Extmap:
    fields = value.split(None, 2)
    if len(fields) < 2:
        raise ValueError("a=extmap needs '<id> <uri>'")
    id_text, _, direction = fields[0].partition("/")
    ident = _uint(id_text, 255, "extmap id")
    if ident == 0:
        raise ValueError("extmap id 0 is reserved")
    if direction and direction not in DIRECTIONS:
        raise ValueError(f"bad extmap direction {direction!r}")
    return Extmap(ident, fields[1], direction or None, fields[2] if len(fields) > 2 else None)


def _codec(media: MediaSection, codecs: dict[int, Codec], pt: int) -> Codec:
    codec = codecs.get(pt)
    if codec is None:
        name, rate, channels = STATIC_PAYLOAD_TYPES.get(pt, ("", 0, None))
        codec = Codec(pt, name, rate, channels, explicit=False)
        codecs[pt] = codec
    return codec


def _media_line(m: MediaSection, codecs: dict[int, Codec], letter: str, value: str) -> None:
    if letter == "i":
        m.info = value
    elif letter == "c":
        m.connection = _connection(value)
    elif letter == "b":
        m.bandwidths.append(value)
    elif letter == "a":
        _media_attr(m, codecs, *_split_attr(value))
    elif letter in "vostzr":
        raise ValueError(f"{letter}= line inside a media section")
    else:
        m.other_lines.append((letter, value))


def _media_attr(m: MediaSection, codecs: dict[int, Codec], name: str, arg: str | None) -> None:
    if _common_attr(m, name, arg):
        return
    if name == "mid":
        if m.mid is not None:
            raise ValueError("second a=mid in a media section")
        m.mid = _need(name, arg)
    elif name == "rtpmap":
        pt_text, _, encoding = _need(name, arg).partition(" ")
        pt = _pt(pt_text)
        parts = encoding.strip().split("/")
        if len(parts) not in (2, 3) or not parts[0]:
            raise ValueError("a=rtpmap needs '<pt> <name>/<rate>[/<channels>]'")
        existing = codecs.get(pt)
        if existing is not None and existing.explicit:
            raise ValueError(f"second a=rtpmap for payload type {pt}")
        codec = _codec(m, codecs, pt)
        codec.name = parts[0]
        codec.clock_rate = _uint(parts[1], 10_000_000, "clock rate")
        codec.channels = _uint(parts[2], 255, "channels") if len(parts) == 3 else None
        codec.explicit = True
    elif name == "fmtp":
        pt_text, _, params = _need(name, arg).partition(" ")
        codec = _codec(m, codecs, _pt(pt_text))
        if codec.fmtp is not None:
            raise ValueError(f"second a=fmtp for payload type {codec.pt}")
        codec.fmtp = params.strip()
    elif name == "rtcp-fb":
        pt_text, _, fb = _need(name, arg).partition(" ")
        fb = " ".join(fb.split())
        if not fb:
            raise ValueError("a=rtcp-fb has no feedback type")
        if pt_text == "*":
            m.rtcp_fb_any.append(fb)
        else:
            _codec(m, codecs, _pt(pt_text)).rtcp_fb.append(fb)
    elif name == "ssrc":
        ssrc_text, _, attr = _need(name, arg).partition(" ")
        attr_name, colon, attr_value = attr.strip().partition(":")
        if not attr_name:
            raise ValueError("a=ssrc needs '<ssrc> <attribute>'")
        ssrc = _uint(ssrc_text, 0xFFFFFFFF, "ssrc")
        m.ssrcs.append(SsrcAttr(ssrc, attr_name, attr_value if colon else None))
    elif name == "ssrc-group":
        fields = _need(name, arg).split()
        m.ssrc_groups.append(SsrcGroup(fields[0], [_uint(f, 0xFFFFFFFF, "ssrc") for f in fields[1:]]))
    elif name == "rid":
        fields = _need(name, arg).split(None, 2)
        if len(fields) < 2 or fields[1] not in ("send", "recv"):
            raise ValueError("a=rid needs '<id> send|recv'")
        if any(r.id == fields[0] for r in m.rids):
            raise ValueError(f"second a=rid:{fields[0]}")
        m.rids.append(Rid(fields[0], fields[1], fields[2] if len(fields) > 2 else None))
    elif name == "simulcast":
        if m.simulcast is not None:
            raise ValueError("second a=simulcast")
        m.simulcast = _simulcast(_need(name, arg))
    elif name == "candidate":
        m.candidates.append(f"candidate:{_need(name, arg)}")
    elif name == "end-of-candidates":
        m.end_of_candidates = True
    elif name == "rtcp-mux" and arg is None:
        m.rtcp_mux = True
    elif name == "rtcp-mux-only" and arg is None:
        m.rtcp_mux_only = True
    elif name == "rtcp-rsize" and arg is None:
        m.rtcp_rsize = True
    elif name == "bundle-only" and arg is None:
        m.bundle_only = True
    elif name == "msid" and m.msid is None:
        m.msid = _need(name, arg)
    else:
        m.other.append((name, arg))


def _simulcast(value: str) -> Simulcast:
    """RFC 8853 §5.1; also the pre-RFC form with 'rid=' before each list (old Firefox/Chrome)."""
    fields = value.split()
    if len(fields) not in (2, 4):
        raise ValueError("a=simulcast needs '<send|recv> <streams>'")
    pairs = [(fields[i], fields[i + 1]) for i in range(0, len(fields), 2)]
    parsed = []
    for direction, text in pairs:
        if direction not in ("send", "recv"):
            raise ValueError(f"bad simulcast direction {direction!r}")
        text = text.removeprefix("rid=")
        streams = [alts.split(",") for alts in text.split(";")]
        for alts in streams:
            for alt in alts:
                if not _TOKEN.fullmatch(alt.removeprefix("~")):
                    raise ValueError(f"bad simulcast rid {alt!r}")
        parsed.append((direction, streams))
    if len(parsed) == 2 and parsed[0][0] == parsed[1][0]:
        raise ValueError("a=simulcast names one direction twice")
    return Simulcast(parsed[0][0], parsed[0][1], parsed[1][1] if len(parsed) == 2 else None)


def _finish_media(m: MediaSection, codecs: dict[int, Codec]) -> None:
    """Order codecs as the m= line lists them, then any described but not listed."""
    ordered: list[Codec] = []
    for fmt in m.formats:
        if _DIGITS.fullmatch(fmt) and int(fmt) <= 127:
            codec = codecs.pop(int(fmt), None)
            if codec is None:
                pt = int(fmt)
                static = STATIC_PAYLOAD_TYPES.get(pt)
                if static is None or "RTP/" not in m.protocol.upper():
                    continue
                codec = Codec(pt, static[0], static[1], static[2], explicit=False)
                if any(c.pt == pt for c in ordered):
                    continue
            ordered.append(codec)
    ordered += codecs.values()
    m.codecs = ordered
