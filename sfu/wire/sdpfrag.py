"""Trickle ICE fragments (RFC 8840): `application/trickle-ice-sdpfrag` bodies of WHIP/WHEP PATCH."""

from __future__ import annotations

from dataclasses import dataclass, field

from sfu.errors import BadRequest

from .sdp_model import Group
from .sdp_text import _DIGITS, _TOKEN, _lines, _need, _split_attr, _uint


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
