"""LoadViewer: `PacketViewer` with a receive path cheap enough for hundreds per process.

Driven as `PacketViewer` is (start/stop, datagrams, one timer); what changes is who reads its socket
and what each RTP packet costs. All viewers of a process share one `Tally`, which holds the C
receiver `sfu._fastpath.LoadReceiver`: every viewer socket sits in its epoll set, and one loop
callback drains them all (a bounded batch per socket and per call, so a joining viewer's ICE and
DTLS answers are not held behind other viewers' media: a browser has a process of its own).

Per RTP packet of an SSRC the viewer has bound, the receiver does in C what this class used to do
in Python: the clear-text header for sequence bookkeeping (gaps and late arrivals come back as
events, so NACKs stay `PacketViewer`'s), the transport-wide sequence number with the kernel's
arrival time (SO_TIMESTAMPNS: the time a busy load-tool process took to get round to a packet is
not in the feedback nor in the latency), RFC 3550 jitter, RTX original sequence numbers, and one
packet in `decrypt_every` SRTP-verified and decrypted to read the publisher's probe (send time ->
latency histogram). What it leaves to Python: STUN, DTLS, SRTCP, and RTP of an SSRC not bound yet
(`PacketViewer`'s full path, after which the viewer binds the SSRC with its state so far).
Receiver reports and NACKs are `PacketViewer`'s, fed from the receiver's state (`_pull`);
transport-cc feedback is built in C from the receiver's arrival records (`twcc_feedback`), the same
bytes `PacketViewer` would send (tested); in Python it cost ~80 µs per feedback.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from sfu._fastpath import LOAD_EVENT_GAP, LoadReceiver, SrtpContext
from sfu.testing import PacketViewer
from sfu.testing._client import _SocketProtocol
from sfu.testing.viewer import NACK_REORDER_WAIT_S

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS has the same value
RECV_BUFFER_BYTES = 1 << 20  # per viewer socket: a keyframe burst while the process is busy
DRAIN_BUDGET = 4096  # datagrams per loop callback (~8 per ready socket): the loop's other work interleaves


class Tally:
    """Per-process receive state shared by its viewers: the C receiver `rx` (its counters: packets,
    bytes, decrypted, decrypt_failures, replayed, recv_errors, twcc_overflow; the latency histogram,
    `rx.take_hist()`), socket send failures, and the one loop callback that drains every registered
    socket."""

    def __init__(self, decrypt_every: int = 1) -> None:
        self.rx = LoadReceiver(decrypt_every)
        self._owners: dict[int, tuple[LoadViewer, int]] = {}  # slot -> (viewer, socket index)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.send_errors = 0  # datagrams the viewers' sockets refused (counted, reported)

    def register(self, viewer: LoadViewer, index: int, sock: socket.socket,
                 loop: asyncio.AbstractEventLoop) -> int:
        if self._loop is None:
            self._loop = loop
            loop.add_reader(self.rx.fileno(), self._on_readable)
        slot = self.rx.add(sock.fileno())
        self._owners[slot] = (viewer, index)
        return slot

    def unregister(self, slot: int) -> None:
        if self._owners.pop(slot, None) is not None:
            self.rx.remove(slot)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.rx.fileno())
            self._loop = None

    def _on_readable(self) -> None:
        rx = self.rx
        slow = rx.drain(DRAIN_BUDGET)
        if slow:
            owners = self._owners
            for slot, data, addr, arrival_ns in slow:
                owner = owners.get(slot)
                if owner is not None:
                    owner[0]._slow_datagram(owner[1], slot, data, addr, arrival_ns)
        events = rx.take_events()
        if events:
            owners = self._owners
            for kind, slot, ssrc, a, b in events:
                owner = owners.get(slot)
                if owner is not None:
                    owner[0]._receive_event(kind, ssrc, a, b)


class _RawSocket:
    """What `_Client` needs of a transport (`sendto`, `close`), over a plain non-blocking socket
    that the process's `Tally` reads."""

    def __init__(self, viewer: LoadViewer, sock: socket.socket, slot: int) -> None:
        self.viewer = viewer
        self.sock = sock
        self.slot = slot

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:
            self.viewer.tally.send_errors += 1

    def close(self) -> None:
        self.viewer._released(self.slot)
        self.sock.close()


class LoadViewer(PacketViewer):
    """A `PacketViewer` for load: see the module docstring."""

    def __init__(self, whep_url: str, token: str | None = None, *, tally: Tally, **kwargs: Any) -> None:
        super().__init__(whep_url, token, **kwargs)
        self.tally = tally
        self._rtx_pts: set[int] = set()
        self._main_slot = -1  # the receiver's slot for socket 0, the one media comes on (-1: none)
        self._first_rtp_ns = 0  # kept when the socket goes
        self._arrival_ns = 0  # kernel arrival of the datagram Python is handling
        self.connected_ns = 0

    @property
    def first_rtp_ns(self) -> int:
        """CLOCK_MONOTONIC arrival of the first RTP packet (0: none yet)."""
        if not self._first_rtp_ns and self._main_slot >= 0:
            self._first_rtp_ns = self.tally.rx.first_rtp_ns(self._main_slot)
        return self._first_rtp_ns

    def _on_answer(self, answer: Any) -> None:
        super()._on_answer(answer)
        self._rtx_pts = {pt for pt, info in self._pt.items() if info[4]}

    def _on_connected(self, now: float) -> None:
        super()._on_connected(now)
        self.connected_ns = time.monotonic_ns()
        if isinstance(self._rx, SrtpContext) and self._main_slot >= 0:
            self.tally.rx.set_media(self._main_slot, self._rx, self._twcc_id, self._rtx_pts, self.connected_ns)

    async def _open_socket(self, loop: asyncio.AbstractEventLoop, index: int) -> tuple[Any, tuple[str, int]]:
        family = socket.AF_INET6 if ":" in self.local_addr else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((self.local_addr, 0))
            sock.setblocking(False)
            slot = self.tally.register(self, index, sock, loop)
        except OSError:
            sock.close()
            raise
        if index == 0:
            self._main_slot = slot
        protocol = _SocketProtocol(self, index)
        protocol.transport = _RawSocket(self, sock, slot)  # type: ignore[assignment]
        return protocol, sock.getsockname()[:2]

    def _released(self, slot: int) -> None:
        if slot == self._main_slot:
            self._first_rtp_ns = self.first_rtp_ns  # read while the slot exists
            self._main_slot = -1
        self.tally.unregister(slot)

    # --- what the receiver hands back ------------------------------------------------------

    def _slow_datagram(self, index: int, slot: int, data: bytes, addr: tuple[str, int], arrival_ns: int) -> None:
        if self._closed:
            return
        if index == 0 and self._rx is not None and len(data) > 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
            rx = self.tally.rx
            if rx.process(slot, data, arrival_ns):
                return  # its SSRC was bound after the datagram was read
            self._pull()
            self._arrival_ns = arrival_ns
            self._datagram(index, data, addr)  # PacketViewer's full path: binds a new SSRC in Python
            self._push()
            return
        self._datagram(index, data, addr)

    def _receive_event(self, kind: int, ssrc: int, a: int, b: int) -> None:
        stream = self._streams.get(ssrc)
        if stream is None or self._closed:
            return
        if kind == LOAD_EVENT_GAP:
            assert self._loop is not None
            due = self._loop.time() + NACK_REORDER_WAIT_S
            stream.open_gap(a, b, due)
            self._arm(due)
        else:
            stream.arrived_late(a)

    def _pull(self) -> None:
        """The receiver's counters into the `PacketViewer` streams (before reports, NACKs, stats)."""
        if self._main_slot < 0:
            return
        streams = self._streams
        for ssrc, base, highest, received, nbytes, jitter, rtx, frames in self.tally.rx.streams(self._main_slot):
            stream = streams.get(ssrc)
            if stream is not None:
                stream.base, stream.highest, stream.received, stream.bytes = base, highest, received, nbytes
                stream.jitter, stream.rtx, stream.frames = jitter, rtx, frames

    def _push(self) -> None:
        """Bind (or update) every SSRC Python knows, and the RTX SSRCs that repair them."""
        if self._main_slot < 0:
            return
        rx, slot = self.tally.rx, self._main_slot
        for ssrc, stream in self._streams.items():
            if stream.highest >= 0:
                rx.bind(slot, ssrc, stream.clock, stream.base, stream.highest, stream.received, stream.bytes)
        for rtx_ssrc, media_ssrc in self._rtx_to_media.items():
            if rtx_ssrc not in self._streams and rx.is_bound(slot, media_ssrc) and not rx.is_bound(slot, rtx_ssrc):
                rx.bind(slot, rtx_ssrc, 90000, 0, 0, media_ssrc=media_ssrc)

    def _record_twcc(self, seq: int, arrival_us: int) -> None:
        # an arrival of the datagram in hand (`_slow_datagram`), kept in order with the receiver's own
        if self._main_slot >= 0:
            self.tally.rx.add_twcc(self._main_slot, seq & 0xFFFF, self._arrival_ns // 1000)

    def _send_twcc(self) -> None:
        """The feedback `PacketViewer` sends, built in C from the receiver's arrival records."""
        if self._main_slot < 0:
            return
        media_ssrc = next(iter(self._streams), 0)
        for packet in self.tally.rx.twcc_feedback(self._main_slot, self.ssrc, media_ssrc):
            self.twcc_sent += 1
            self._send_rtcp(packet)

    def _periodic(self, now: float) -> float:
        if now >= self._next_rr:  # the receiver report reads the counters; NACKs and feedback do not
            self._pull()
        return super()._periodic(now)

    # --- summaries ----------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Cumulative receive counters over this viewer's streams (cheap: no latency lists)."""
        self._pull()
        expected = received = gaps = recovered = late = 0
        for s in self._streams.values():
            if s.highest >= 0:
                expected += s.highest - s.base + 1
            received += s.received
            gaps += s.gaps
            recovered += s.recovered
            late += s.late
        return {
            "expected": expected, "received": received, "gaps": gaps, "recovered": recovered,
            "late": late, "nacks_sent": self.nacks_sent, "nacked_seqs": self.nacked_seqs,
            "rr_sent": self.rr_sent, "twcc_sent": self.twcc_sent, "sr_received": self.sr_received,
        }
