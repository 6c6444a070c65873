"""The SDP data model (RFC 8866) and its serialisation, lossless for what WebRTC offers carry.

Values only: no I/O, no clock. `sfu.wire.sdp.parse` builds these; `SessionDescription.to_string()`
writes one back (CRLF). Attributes the model does not name are kept in `other` lists, in order, and
written back, so `parse(d.to_string()) == d` for anything `parse` returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .sdp_text import _DIGITS


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
