"""SDP (RFC 8866) parsing and serialisation, lossless for what WebRTC offers carry.

Values only: no I/O, no clock. `parse(text)` turns an offer into a `SessionDescription`;
`SessionDescription.to_string()` writes it back (CRLF). Attributes the model does not name are kept
in `other` lists, in order, and written back, so `parse(d.to_string()) == d` for anything `parse`
returned. Malformed input raises `sfu.errors.BadRequest` with the line number and what was wrong.

Modelled (and why `aiortc.sdp` is not used): rid (RFC 8851), simulcast (RFC 8853),
extmap-allow-mixed and extmap directions/attributes (RFC 8285), bundle-only (RFC 8843),
rtcp-mux-only (RFC 8858), rtcp-rsize (RFC 5506), fmtp/rtcp-fb for static payload types without an
rtpmap. `parse_sdpfrag` reads `application/trickle-ice-sdpfrag` bodies (RFC 8840).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sfu.errors import BadRequest

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

MAX_SDP_CHARS = 256 * 1024  # a Chrome offer with 16 simulcast tracks is ~60 KiB; far above that is abuse
MAX_MEDIA_SECTIONS = 256  # browsers cap transceivers well below this; bounds the work per offer
MAX_LINE_CHARS = 4096  # the longest real lines are fmtp with sprop-parameter-sets (~300 chars)

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

_DIGITS = re.compile(r"[0-9]{1,10}")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+")
# Control characters other than TAB make the text binary, not SDP (CR/LF are split off first).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LINE = re.compile(r"([a-z])=(.*)")


def _uint(text: str, maximum: int, what: str) -> int:
    """A decimal in 0..maximum, ASCII digits only (int() also takes '+5', '1_0' and Arabic digits)."""
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"{what} is not a number: {text!r}")
    value = int(text)
    if value > maximum:
        raise ValueError(f"{what} out of range: {value}")
    return value


def _pt(text: str) -> int:
    return _uint(text, 127, "payload type")


# ---------------------------------------------------------------------------------------------
# Values


@dataclass
class Group:
    """a=group (RFC 5888), e.g. BUNDLE (RFC 8843) or LS."""

    semantics: str
    mids: list[str] = field(default_factory=list)


@dataclass
class Codec:
    """One payload type: a=rtpmap + a=fmtp + a=rtcp-fb merged.

    `explicit` is False when the payload type had no a=rtpmap (a static PT such as 0/8/9, named from
    RFC 3551, or a dynamic PT given only an fmtp, then named "").
    """

    pt: int
    name: str
    clock_rate: int
    channels: int | None = None
    fmtp: str | None = None  # verbatim
    rtcp_fb: list[str] = field(default_factory=list)
    explicit: bool = True

    def fmtp_params(self) -> dict[str, str]:
        """fmtp as key -> value (spaces around ';' and '=' tolerated; keys without '=' map to '')."""
        params: dict[str, str] = {}
        if not self.fmtp:
            return params
        for item in self.fmtp.split(";"):
            item = item.strip()
            if not item:
                continue
            key, _, value = item.partition("=")
            params[key.strip()] = value.strip()
        return params

    @property
    def apt(self) -> int | None:
        """RFC 4588 associated payload type of an RTX codec, None when absent or malformed."""
        value = self.fmtp_params().get("apt")
        if value is None or not _DIGITS.fullmatch(value) or int(value) > 127:
            return None
        return int(value)

    @property
    def is_rtx(self) -> bool:
        return self.name.lower() == "rtx"


@dataclass
class Extmap:
    """a=extmap:<id>[/<direction>] <uri> [<attributes>] (RFC 8285 §7)."""

    id: int
    uri: str
    direction: str | None = None
    attributes: str | None = None


@dataclass
class SsrcAttr:
    """a=ssrc:<ssrc> <name>[:<value>] (RFC 5576)."""

    ssrc: int
    name: str
    value: str | None = None


@dataclass
class SsrcGroup:
    """a=ssrc-group:<semantics> <ssrc>... (RFC 5576), e.g. FID (RTX) or SIM."""

    semantics: str
    ssrcs: list[int] = field(default_factory=list)


@dataclass
class Rid:
    """a=rid:<id> <send|recv> [<params>] (RFC 8851); params kept verbatim."""

    id: str
    direction: str
    params: str | None = None


@dataclass
class Simulcast:
    """a=simulcast (RFC 8853): `streams` for `direction`, each a list of alternative rid ids.

    A paused alternative keeps its '~' prefix. `reverse_streams` holds the other direction's list
    when both are given ("send q;h recv r").
    """

    direction: str
    streams: list[list[str]] = field(default_factory=list)
    reverse_streams: list[list[str]] | None = None

    def rid_ids(self) -> list[str]:
        """Every rid named for `direction`, without '~', in order."""
        return [alt.lstrip("~") for stream in self.streams for alt in stream]


@dataclass
class MediaSection:
    kind: str  # media type from the m= line: audio, video, application, or anything else verbatim
    port: int
    protocol: str
    formats: list[str] = field(default_factory=list)
    port_count: int | None = None
    info: str | None = None
    connection: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    mid: str | None = None
    direction: str | None = None  # None: not stated (RFC 8866 default sendrecv)
    codecs: list[Codec] = field(default_factory=list)
    rtcp_fb_any: list[str] = field(default_factory=list)  # a=rtcp-fb:* values
    extmaps: list[Extmap] = field(default_factory=list)
    ssrcs: list[SsrcAttr] = field(default_factory=list)
    ssrc_groups: list[SsrcGroup] = field(default_factory=list)
    rids: list[Rid] = field(default_factory=list)
    simulcast: Simulcast | None = None
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: str | None = None
    candidates: list[str] = field(default_factory=list)  # "candidate:..." attribute values
    end_of_candidates: bool = False
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    rtcp_mux: bool = False
    rtcp_mux_only: bool = False
    rtcp_rsize: bool = False
    bundle_only: bool = False
    extmap_allow_mixed: bool = False
    msid: str | None = None
    other: list[tuple[str, str | None]] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)  # k=, unknown letters

    def codec(self, pt: int) -> Codec | None:
        for codec in self.codecs:
            if codec.pt == pt:
                return codec
        return None

    def effective_direction(self, session_direction: str | None = None) -> str:
        return self.direction or session_direction or "sendrecv"

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        out = [f"m={self.kind} {port} {self.protocol} {' '.join(self.formats)}".rstrip()]
        if self.info is not None:
            out.append(f"i={self.info}")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={b}" for b in self.bandwidths]
        out += [f"{letter}={value}" for letter, value in self.other_lines]
        if self.mid is not None:
            out.append(f"a=mid:{self.mid}")
        if self.bundle_only:
            out.append("a=bundle-only")
        out += _transport_lines(self.ice_ufrag, self.ice_pwd, self.ice_options, self.fingerprints, self.setup)
        out += [f"a={c}" for c in self.candidates]
        if self.end_of_candidates:
            out.append("a=end-of-candidates")
        if self.extmap_allow_mixed:
            out.append("a=extmap-allow-mixed")
        out += [_extmap_line(e) for e in self.extmaps]
        if self.direction is not None:
            out.append(f"a={self.direction}")
        if self.msid is not None:
            out.append(f"a=msid:{self.msid}")
        for flag, name in (
            (self.rtcp_mux, "rtcp-mux"),
            (self.rtcp_mux_only, "rtcp-mux-only"),
            (self.rtcp_rsize, "rtcp-rsize"),
        ):
            if flag:
                out.append(f"a={name}")
        for codec in self.codecs:
            if codec.explicit:
                channels = f"/{codec.channels}" if codec.channels is not None else ""
                out.append(f"a=rtpmap:{codec.pt} {codec.name}/{codec.clock_rate}{channels}")
            out += [f"a=rtcp-fb:{codec.pt} {fb}" for fb in codec.rtcp_fb]
            if codec.fmtp is not None:
                out.append(f"a=fmtp:{codec.pt} {codec.fmtp}")
        out += [f"a=rtcp-fb:* {fb}" for fb in self.rtcp_fb_any]
        for rid in self.rids:
            out.append(f"a=rid:{rid.id} {rid.direction}" + (f" {rid.params}" if rid.params else ""))
        if self.simulcast is not None:
            out.append(f"a=simulcast:{_simulcast_value(self.simulcast)}")
        out += [f"a=ssrc-group:{g.semantics} {' '.join(map(str, g.ssrcs))}".rstrip() for g in self.ssrc_groups]
        out += [f"a=ssrc:{s.ssrc} {s.name}" + (f":{s.value}" if s.value is not None else "") for s in self.ssrcs]
        out += [_attr_line(name, value) for name, value in self.other]
        return out


@dataclass
class SessionDescription:
    media: list[MediaSection] = field(default_factory=list)
    version: int = 0
    origin: str = "- 0 0 IN IP4 127.0.0.1"
    session_name: str = "-"
    timing: str = "0 0"
    info: str | None = None
    connection: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    ice_lite: bool = False
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: str | None = None
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    direction: str | None = None
    extmap_allow_mixed: bool = False
    extmaps: list[Extmap] = field(default_factory=list)
    msid_semantic: str | None = None
    other: list[tuple[str, str | None]] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)  # u= e= p= r= z= k=, unknown letters

    def bundle_group(self) -> Group | None:
        for group in self.groups:
            if group.semantics.upper() == "BUNDLE":
                return group
        return None

    def to_string(self) -> str:
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.info is not None:
            out.append(f"i={self.info}")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={b}" for b in self.bandwidths]
        out.append(f"t={self.timing}")
        out += [f"{letter}={value}" for letter, value in self.other_lines]
        if self.ice_lite:
            out.append("a=ice-lite")
        out += [f"a=group:{g.semantics} {' '.join(g.mids)}".rstrip() for g in self.groups]
        if self.extmap_allow_mixed:
            out.append("a=extmap-allow-mixed")
        if self.msid_semantic is not None:
            out.append(f"a=msid-semantic:{self.msid_semantic}")
        out += _transport_lines(self.ice_ufrag, self.ice_pwd, self.ice_options, self.fingerprints, self.setup)
        out += [_extmap_line(e) for e in self.extmaps]
        if self.direction is not None:
            out.append(f"a={self.direction}")
        out += [_attr_line(name, value) for name, value in self.other]
        for media in self.media:
            out += media.lines()
        return "\r\n".join(out) + "\r\n"


def _transport_lines(
    ufrag: str | None, pwd: str | None, options: str | None, fingerprints: list[tuple[str, str]], setup: str | None
) -> list[str]:
    out = []
    if ufrag is not None:
        out.append(f"a=ice-ufrag:{ufrag}")
    if pwd is not None:
        out.append(f"a=ice-pwd:{pwd}")
    if options is not None:
        out.append(f"a=ice-options:{options}")
    out += [f"a=fingerprint:{alg} {value}" for alg, value in fingerprints]
    if setup is not None:
        out.append(f"a=setup:{setup}")
    return out


def _extmap_line(e: Extmap) -> str:
    ident = f"{e.id}/{e.direction}" if e.direction else str(e.id)
    return f"a=extmap:{ident} {e.uri}" + (f" {e.attributes}" if e.attributes else "")


def _attr_line(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


def _simulcast_value(s: Simulcast) -> str:
    def streams(lst: list[list[str]]) -> str:
        return ";".join(",".join(alts) for alts in lst)

    text = f"{s.direction} {streams(s.streams)}"
    if s.reverse_streams is not None:
        reverse = "recv" if s.direction == "send" else "send"
        text += f" {reverse} {streams(s.reverse_streams)}"
    return text


# ---------------------------------------------------------------------------------------------
# Parsing


def _lines(text: str | bytes) -> list[tuple[int, str, str]]:
    """(line number, type letter, value) for each non-empty line; BadRequest on non-SDP input."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_SDP_CHARS * 4:
            raise BadRequest(f"SDP too large ({len(text)} bytes)")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"SDP is not UTF-8 text (byte {exc.start})") from None
    if not isinstance(text, str):
        raise BadRequest("SDP must be text")
    if len(text) > MAX_SDP_CHARS:
        raise BadRequest(f"SDP too large ({len(text)} characters, limit {MAX_SDP_CHARS})")
    out = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip(" \t\r")
        if not line:
            continue
        if _CONTROL.search(line) or "\r" in line:
            raise BadRequest(f"line {number}: control characters (binary data, not SDP)")
        if len(line) > MAX_LINE_CHARS:
            raise BadRequest(f"line {number}: longer than {MAX_LINE_CHARS} characters")
        match = _LINE.fullmatch(line)
        if match is None:
            raise BadRequest(f"line {number}: not '<type>=<value>': {line[:40]!r}")
        out.append((number, match.group(1), match.group(2)))
    return out


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


def _split_attr(value: str) -> tuple[str, str | None]:
    name, colon, rest = value.partition(":")
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"bad attribute name {name[:40]!r}")
    return name, (rest if colon else None)


def _need(name: str, value: str | None) -> str:
    if value is None or not value.strip():
        raise ValueError(f"a={name} has no value")
    return value.strip()


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


# ---------------------------------------------------------------------------------------------
# Trickle ICE fragments (RFC 8840)


@dataclass
class FragMedia:
    """One m= section of an sdpfrag: which mid (or m-line index) the candidates belong to."""

    mid: str | None
    index: int  # position of the m= line in the fragment
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    candidates: list[str] = field(default_factory=list)
    end_of_candidates: bool = False


@dataclass
class SdpFrag:
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: str | None = None
    groups: list[Group] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)  # session-level (sent by some WHIP clients)
    end_of_candidates: bool = False
    media: list[FragMedia] = field(default_factory=list)

    def credentials(self) -> tuple[str | None, str | None]:
        """ICE ufrag/pwd from the session level, else the first media section that has them."""
        ufrag, pwd = self.ice_ufrag, self.ice_pwd
        for m in self.media:
            ufrag = ufrag or m.ice_ufrag
            pwd = pwd or m.ice_pwd
        return ufrag, pwd

    def all_candidates(self) -> list[tuple[str | None, str]]:
        """(mid or None, "candidate:...") for every candidate."""
        out: list[tuple[str | None, str]] = [(None, c) for c in self.candidates]
        for m in self.media:
            out += [(m.mid, c) for c in m.candidates]
        return out

    @property
    def complete(self) -> bool:
        return self.end_of_candidates or any(m.end_of_candidates for m in self.media)


def is_valid_candidate(value: str) -> bool:
    """RFC 8839 §5.1 shape: 'candidate:<foundation> <component> <transport> <priority> <addr> <port> typ <type>...'."""
    if not value.startswith("candidate:"):
        return False
    fields = value[len("candidate:") :].split()
    if len(fields) < 8 or fields[6] != "typ":
        return False
    return bool(
        _TOKEN.fullmatch(fields[0])
        and _DIGITS.fullmatch(fields[1])
        and _DIGITS.fullmatch(fields[3])
        and _DIGITS.fullmatch(fields[5])
        and int(fields[5]) <= 65535
        and fields[4]
        and fields[7]
    )


_FRAG_IGNORED = frozenset({"c", "b", "i"})


def parse_sdpfrag(text: str | bytes) -> SdpFrag:
    """Parse an `application/trickle-ice-sdpfrag` body (RFC 8840 §9). Empty text gives an empty frag."""
    frag = SdpFrag()
    media: FragMedia | None = None
    for number, letter, value in _lines(text):
        try:
            if letter == "m":
                fields = value.split()
                if len(fields) < 4:
                    raise ValueError("m= line needs '<media> <port> <proto> <fmt>'")
                _uint(fields[1].partition("/")[0], 65535, "port")
                media = FragMedia(mid=None, index=len(frag.media))
                frag.media.append(media)
                continue
            if letter in _FRAG_IGNORED:
                continue
            if letter != "a":
                raise ValueError(f"unexpected {letter}= line in an sdpfrag")
            name, arg = _split_attr(value)
            if name == "candidate":
                candidate = f"candidate:{_need(name, arg)}"
                if not is_valid_candidate(candidate):
                    raise ValueError("malformed a=candidate")
                (media.candidates if media else frag.candidates).append(candidate)
            elif name == "end-of-candidates":
                if media is None:
                    frag.end_of_candidates = True
                else:
                    media.end_of_candidates = True
            elif name == "ice-ufrag":
                if media is None:
                    frag.ice_ufrag = _need(name, arg)
                else:
                    media.ice_ufrag = _need(name, arg)
            elif name == "ice-pwd":
                if media is None:
                    frag.ice_pwd = _need(name, arg)
                else:
                    media.ice_pwd = _need(name, arg)
            elif name == "ice-options":
                frag.ice_options = _need(name, arg)
            elif name == "group":
                fields = _need(name, arg).split()
                frag.groups.append(Group(fields[0], fields[1:]))
            elif name == "mid":
                if media is None:
                    raise ValueError("a=mid before any m= line")
                media.mid = _need(name, arg)
            # Other attributes (a=ice-lite, a=rtcp...) are legal in a fragment and ignored.
        except ValueError as exc:
            raise BadRequest(f"sdpfrag line {number}: {exc}") from None
    return frag
