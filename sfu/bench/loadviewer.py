"""LoadViewer: `PacketViewer` with a receive path cheap enough for hundreds per process.

Driven as `PacketViewer` is (start/stop, datagrams, one timer); what changes is how its socket is
read and what each RTP packet costs:

- the socket is read with `recvmsg` from a `loop.add_reader` callback, at most `RECV_BATCH`
  datagrams per wake-up (the loop is level-triggered: it calls again while more wait), with
  kernel receive timestamps (SO_TIMESTAMPNS): latency and TWCC arrival times do not include the time
  a busy load-tool process took to get round to the packet;
- per RTP packet: the clear-text header is read (SRTP leaves the header and its extensions in the
  clear) for sequence bookkeeping (gaps, reordering, late packets), the transport-wide sequence number
  (offset cached per layout) and the RFC 3550 jitter; one packet in `decrypt_every` is SRTP-verified
  and decrypted to read the publisher's probe (send time -> latency); no per-packet Python objects
  besides the datagram itself;
- receiver reports, NACKs and transport-cc feedback are `PacketViewer`'s, unchanged (so are the
  first packet of each SSRC and RTX packets, which take its full path).

All viewers of a process share one `Tally` (packet counts and the latency histogram).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

from sfu.bench import hist
from sfu.testing import PacketViewer, media
from sfu.testing._client import _SocketProtocol
from sfu.testing.viewer import NACK_REORDER_WAIT_S, _find_extension

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS has the same value
RECV_BUFFER_BYTES = 1 << 20  # per viewer socket: a keyframe burst while the process is busy
RECV_SIZE = 2048
RECV_BATCH = 8  # datagrams per socket per wake-up: about one video frame of the top layer
ANCILLARY_SIZE = 64
_TIMESPEC = struct.Struct("@qq")
_SEQ_TS_SSRC = struct.Struct("!HII")
_Q = struct.Struct("!Q")
_PROBE = struct.Struct("!QIB")
PROBE_MAGIC = media.PROBE_MAGIC
PROBE_WINDOW = 96  # bytes after the RTP header where the probe is looked for
# A packet sent this much earlier than the newest one already seen on its SSRC (or before the viewer
# connected) is a replay — the server's keyframe cache at a join or a layer switch — not a measure of
# forwarding delay: counted apart. Layers of one frame are sent within a frame interval (33 ms).
REPLAY_SLACK_NS = 50_000_000


class Tally:
    """Per-process totals shared by its viewers (cheap to update, merged across processes)."""

    def __init__(self) -> None:
        self.packets = 0  # RTP packets received (all viewers)
        self.bytes = 0
        self.decrypted = 0
        self.decrypt_failures = 0
        self.replayed = 0  # probes older than the stream's newest (cache replays): not in `hist`
        self.hist: dict[int, int] = {}  # latency µs bucket -> count
        self.recv_errors = 0
        self.mono_offset_ns = 0  # CLOCK_REALTIME - CLOCK_MONOTONIC, refreshed by `tick`
        self.tick()

    def tick(self) -> None:
        self.mono_offset_ns = time.time_ns() - time.monotonic_ns()

    def take_hist(self) -> dict[int, int]:
        out, self.hist = self.hist, {}
        return out


class _RawSocket:
    """What `_Client` needs of a transport (`sendto`, `close`), over a plain non-blocking socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.send_errors = 0

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:
            self.send_errors += 1

    def close(self) -> None:
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()


class LoadViewer(PacketViewer):
    """A `PacketViewer` for load: see the module docstring."""

    def __init__(self, whep_url: str, token: str | None = None, *, tally: Tally, decrypt_every: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(whep_url, token, **kwargs)
        self.tally = tally
        self.decrypt_every = max(1, decrypt_every)
        self._until_decrypt = 0
        self._rtx_pts: set[int] = set()
        self._twcc_cache: tuple[int, int, int] = (-1, -1, -1)  # (b0, position of value, header byte)
        self.first_rtp_ns = 0  # monotonic arrival of the first RTP packet
        self.connected_ns = 0
        self._newest_send: dict[int, int] = {}  # ssrc -> newest probe send time seen

    def _on_connected(self, now: float) -> None:
        super()._on_connected(now)
        self.connected_ns = time.monotonic_ns()

    def _on_answer(self, answer: Any) -> None:
        super()._on_answer(answer)
        self._rtx_pts = {pt for pt, info in self._pt.items() if info[4]}

    async def _open_socket(self, loop: asyncio.AbstractEventLoop, index: int) -> tuple[Any, tuple[str, int]]:
        family = socket.AF_INET6 if ":" in self.local_addr else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((self.local_addr, 0))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        protocol = _SocketProtocol(self, index)
        protocol.transport = _RawSocket(loop, sock)  # type: ignore[assignment]
        loop.add_reader(sock.fileno(), self._drain, sock, index)
        return protocol, sock.getsockname()[:2]

    def _drain(self, sock: socket.socket, index: int) -> None:
        """Read at most `RECV_BATCH` datagrams; the loop calls again while more are queued.

        Bounded so that one loop iteration stays short however far behind the process is: each
        viewer's socket gets its turn every iteration, and a joining viewer's ICE and DTLS answers
        are not held behind other viewers' queued media (a browser has a process of its own)."""
        recvmsg = sock.recvmsg
        tally = self.tally
        fast = self._fast_rtp
        for _ in range(RECV_BATCH):
            try:
                data, ancdata, _flags, addr = recvmsg(RECV_SIZE, ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                tally.recv_errors += 1
                return
            if self._closed:
                return
            if (
                len(data) > 12 and 127 < data[0] < 192 and not 191 < data[1] < 224
                and self._rx is not None and index == 0
            ):
                if ancdata:
                    sec, nsec = _TIMESPEC.unpack(ancdata[0][2])
                    arrival_ns = sec * 1_000_000_000 + nsec - tally.mono_offset_ns
                else:
                    arrival_ns = time.monotonic_ns()
                fast(data, arrival_ns, addr)
            else:
                self._datagram(index, data, addr)

    def _fast_rtp(self, data: bytes, arrival_ns: int, addr: tuple[str, int]) -> None:
        tally = self.tally
        tally.packets += 1
        tally.bytes += len(data)
        b0 = data[0]
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        stream = self._streams.get(ssrc)
        if stream is None or (data[1] & 0x7F) in self._rtx_pts:
            if not self.first_rtp_ns:
                self.first_rtp_ns = arrival_ns
            self._socket_stats[0].rtp += 1
            self._on_rtp(0, data, addr)  # PacketViewer's full path (decrypts, binds the SSRC)
            return
        offset = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10 and self._twcc_id:
            cached_b0, pos, marker = self._twcc_cache
            if b0 != cached_b0 or pos >= len(data) or data[pos - 1] != marker:
                profile = (data[offset] << 8) | data[offset + 1]
                end = offset + 4 + 4 * ((data[offset + 2] << 8) | data[offset + 3])
                pos = _find_extension(data, offset + 4, end, profile, self._twcc_id)
                if pos >= 0:
                    self._twcc_cache = (b0, pos, data[pos - 1])
            if pos >= 0:
                twcc = (data[pos] << 8) | data[pos + 1]
                highest = self._twcc_highest
                delta = (twcc - highest) & 0xFFFF
                ext = highest + delta if delta < 0x8000 else highest + delta - 0x10000
                if ext > highest:
                    self._twcc_highest = ext
                self._twcc_arrivals.append((ext, arrival_ns // 1000))
        # sequence bookkeeping, as PacketViewer does (RFC 3550 A.1), without the duplicate ring
        highest = stream.highest
        delta = (seq - highest) & 0xFFFF
        ext = highest + delta if delta < 0x8000 else highest + delta - 0x10000
        fresh = ext > highest
        if fresh:
            if ext > highest + 1:
                assert self._loop is not None
                due = self._loop.time() + NACK_REORDER_WAIT_S
                stream.open_gap(highest, ext, due)
                self._arm(due)
            stream.highest = ext
            # RFC 3550 A.8 interarrival jitter
            transit = (arrival_ns * stream.clock) // 1_000_000_000 - ts
            last = stream.last_transit
            if last is not None:
                d = transit - last
                stream.jitter += ((d if d >= 0 else -d) - stream.jitter) / 16.0
            stream.last_transit = transit
        else:
            stream.arrived_late(ext)  # late or duplicate: not told apart here (no seen ring)
        stream.received += 1
        stream.bytes += len(data)
        if not fresh:
            return
        self._until_decrypt -= 1
        if self._until_decrypt > 0:
            return
        self._until_decrypt = self.decrypt_every
        assert self._rx is not None
        try:
            plain = self._rx.unprotect(data)
        except Exception:
            tally.decrypt_failures += 1
            return
        tally.decrypted += 1
        pos = plain.find(PROBE_MAGIC, offset, offset + PROBE_WINDOW)
        if pos < 0 or pos + 17 > len(plain):
            return
        send_ns, frame, _layer = _PROBE.unpack_from(plain, pos + 4)
        newest = self._newest_send.get(ssrc, self.connected_ns)
        if send_ns < newest - REPLAY_SLACK_NS or send_ns < self.connected_ns:
            tally.replayed += 1
            return
        if send_ns > newest:
            self._newest_send[ssrc] = send_ns
        us = (arrival_ns - send_ns) // 1000
        key = us if us < 1000 else hist.bucket(us)
        h = tally.hist
        h[key] = h.get(key, 0) + 1
        if frame != stream.last_frame:
            stream.last_frame = frame
            stream.frames += 1

    # --- summaries ----------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Cumulative receive counters over this viewer's streams (cheap: no latency lists)."""
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
