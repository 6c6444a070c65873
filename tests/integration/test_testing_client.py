"""The packet-level WHIP/WHEP clients of `sfu.testing`.

Pieces alone (offer, packetisation, ICE checks, DTLS + SRTP in memory), then the clients end
to end: against `_LoopbackRelay` (a ~100-line ICE-lite/DTLS/SRTP relay written here from the
wire pieces, so the clients are checked without the real server), and against `sfu.Server`
when it imports.
"""

from __future__ import annotations

import asyncio
import statistics
import struct
import time

import pytest
from aiohttp import web

from sfu.wire.codecs import h264_sps_resolution

from sfu.core.certificate import Certificate
from sfu.core.dtls import DtlsConnected, DtlsEndpoint
from sfu.testing import PacketPublisher, PacketViewer, WhepError, media
from sfu.testing._dtls import make_dtls_client, make_srtp, profile_name
from sfu.testing.sdp import EXT_RID, EXT_TWCC, parse_answer
from sfu.wire import rtcp, stun
from sfu.wire import sdp as wire_sdp

# --- offers -------------------------------------------------------------------------------


def test_publisher_offer_reads_back_with_the_server_parser() -> None:
    pub = PacketPublisher("http://h/whip", None, video_codec="H264", simulcast_rids=["q", "h", "f"])
    offer = wire_sdp.parse(pub.build_offer())
    audio, video = offer.media
    assert (audio.kind, audio.mid, audio.direction) == ("audio", "0", "sendonly")
    assert (video.kind, video.mid, video.direction) == ("video", "1", "sendonly")
    assert [c.name for c in video.codecs] == ["H264"]
    assert "packetization-mode=1" in (video.codecs[0].fmtp or "")
    assert [r.id for r in video.rids] == ["q", "h", "f"]
    assert video.simulcast is not None and video.simulcast.direction == "send"
    assert {e.uri for e in video.extmaps} >= {EXT_RID, EXT_TWCC}
    assert not video.ssrcs  # simulcast: the server learns SSRCs from the rid extension
    for section in offer.media:
        assert section.setup == "actpass" and not section.candidates
        assert section.fingerprints and section.fingerprints[0][0] == "sha-256"
        assert section.rtcp_mux and section.ice_ufrag and section.ice_pwd


def test_viewer_offer_is_recvonly_with_every_video_codec() -> None:
    offer = wire_sdp.parse(PacketViewer("http://h/whep", rtx=True).build_offer())
    assert [(m.kind, m.direction) for m in offer.media] == [("audio", "recvonly"), ("video", "recvonly")]
    assert [c.name for c in offer.media[1].codecs] == ["VP8", "rtx", "H264", "rtx", "VP9", "rtx", "AV1", "rtx"]


def test_answer_parser_session_level_defaults() -> None:
    answer = parse_answer(
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-lite\r\na=ice-ufrag:abcd\r\n"
        "a=ice-pwd:0123456789012345678901\r\na=fingerprint:sha-256 ab:cd\r\n"
        "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n"
        "a=rtcp-fb:96 nack\r\na=extmap:3 " + EXT_TWCC + "\r\n"
        "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
    )
    assert answer.ice_lite and answer.ice_ufrag == "abcd" and answer.fingerprints == [("sha-256", "AB:CD")]
    assert answer.kind("audio") is None  # rejected: port 0, no bundle-only
    video = answer.kind("video")
    assert video is not None and video.codecs[0].feedback == ["nack"] and video.extmaps[EXT_TWCC] == 3
    assert [(c.host, c.port) for c in answer.candidates] == [("127.0.0.1", 5000)]


# --- packetisation ------------------------------------------------------------------------


def test_vp8_frames_split_under_the_mtu_with_keyframe_header() -> None:
    probe = media.probe(123, 7, 2)
    key = media.vp8_frame_payloads(keyframe=True, width=640, height=360, picture_id=5,
                                   frame_bytes=4166, max_payload=1180, probe_bytes=probe)
    delta = media.vp8_frame_payloads(keyframe=False, width=640, height=360, picture_id=6,
                                     frame_bytes=4166, max_payload=1180, probe_bytes=probe)
    assert len(key) == len(delta) == 4
    assert all(len(p) <= 1180 for p in key + delta)
    assert media.vp8_is_keyframe(key[0]) == (True, 640, 360)
    assert key[0][7:10] == b"\x9d\x01\x2a"  # 4-byte descriptor, 3-byte frame tag, start code
    assert not any(media.vp8_is_keyframe(p)[0] for p in key[1:] + delta)
    assert all(media.find_probe(p) == (123, 7, 2) for p in key + delta)
    assert 4166 <= sum(len(p) for p in key) <= 4166 + 4 * 4 + 10


def _read_ue(bits: str, pos: int) -> tuple[int, int]:
    zeros = 0
    while bits[pos + zeros] == "0":
        zeros += 1
    value = int(bits[pos + zeros : pos + 2 * zeros + 1], 2) - 1
    return value, pos + 2 * zeros + 1


def _sps_size(sps: bytes) -> tuple[int, int]:
    """Decode width/height of the Baseline SPS `media.h264_sps` writes (H.264 §7.3.2.1.1)."""
    raw = sps[4:].replace(b"\x00\x00\x03", b"\x00\x00")
    bits = "".join(f"{b:08b}" for b in raw)
    pos = 0
    for _ in range(4):  # sps id, log2_max_frame_num, poc type (2), max_num_ref_frames
        _, pos = _read_ue(bits, pos)
    pos += 1  # gaps flag
    mbs_w, pos = _read_ue(bits, pos)
    mbs_h, pos = _read_ue(bits, pos)
    pos += 2  # frame_mbs_only, direct_8x8
    crop = [0, 0, 0, 0]
    if bits[pos] == "1":
        pos += 1
        for i in range(4):
            crop[i], pos = _read_ue(bits, pos)
    return (mbs_w + 1) * 16 - 2 * (crop[0] + crop[1]), (mbs_h + 1) * 16 - 2 * (crop[2] + crop[3])


@pytest.mark.parametrize("size", [(1280, 720), (640, 360), (320, 180), (1920, 1080)])
def test_h264_sps_encodes_the_layer_size(size: tuple[int, int]) -> None:
    sps = media.h264_sps(*size)
    assert sps[:4] == b"\x67\x42\xe0\x1f"
    assert _sps_size(sps) == size
    assert h264_sps_resolution(sps) == size


def test_h264_keyframe_is_stap_a_then_fu_a_idr() -> None:
    probe = media.probe(1, 2, 0)
    key = media.h264_frame_payloads(keyframe=True, width=640, height=360, frame_bytes=3000,
                                    max_payload=1180, probe_bytes=probe)
    delta = media.h264_frame_payloads(keyframe=False, width=640, height=360, frame_bytes=3000,
                                      max_payload=1180, probe_bytes=probe)
    assert key[0][0] & 0x1F == 24  # STAP-A
    units, pos = [], 1
    while pos < len(key[0]):
        (length,) = struct.unpack_from("!H", key[0], pos)
        units.append(key[0][pos + 2 : pos + 2 + length])
        pos += 2 + length
    assert [u[0] & 0x1F for u in units] == [7, 8, 6] and pos == len(key[0])
    assert _sps_size(units[0]) == (640, 360)
    assert media.h264_keyframe_size(key[0]) == (640, 360)
    fu = key[1:]
    assert [p[0] & 0x1F for p in fu] == [28] * len(fu) and len(fu) == 3
    assert fu[0][1] == 0x85 and fu[-1][1] == 0x45  # S+IDR ... E+IDR
    assert all(media.h264_is_keyframe(p) for p in key[:2]) and not media.h264_is_keyframe(key[2])
    assert delta[0][1] == 0x81 and not any(media.h264_is_keyframe(p) for p in delta)
    assert all(media.find_probe(p) == (1, 2, 0) for p in key + delta)
    small = media.h264_frame_payloads(keyframe=False, width=16, height=16, frame_bytes=100,
                                      max_payload=1180, probe_bytes=probe)
    assert len(small) == 1 and small[0][0] == 0x41  # single NAL, never a lone FU-A


def test_layer_plan_ranks_by_convention() -> None:
    browser = media.plan_layers(["q", "h", "f"], 2_000_000)
    assert [(p.width, p.height) for p in browser] == [(320, 180), (640, 360), (1280, 720)]
    assert browser[2].bitrate == 2_000_000 and browser[1].bitrate == 500_000
    obs = media.plan_layers(["0", "1", "2"], 2_000_000)
    assert [p.width for p in obs] == [1280, 640, 320]


def test_rtp_header_extensions_are_rfc8285_one_byte() -> None:
    ext = media.one_byte_extensions([(4, b"1"), (10, b"hh"), (3, b"\x00\x07")])
    assert ext[:2] == b"\xbe\xde" and len(ext) % 4 == 0
    header = media.rtp_header(96, 65535, 1, 0xABCDEF01, True, ext)
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", header)
    assert (b0, b1, seq, ssrc) == (0x90, 0x80 | 96, 65535, 0xABCDEF01)
    from sfu.testing.viewer import _find_extension

    words = struct.unpack_from("!H", ext, 2)[0]
    pos = _find_extension(header, 16, 16 + 4 * words, 0xBEDE, 3)
    assert header[pos : pos + 2] == b"\x00\x07"


# --- ICE, DTLS, SRTP ----------------------------------------------------------------------


def test_checks_validate_as_the_server_reads_them() -> None:
    tid, data = stun.binding_request("srv:cli", "serverpassword0123456789", use_candidate=True,
                                     priority=123, controlling=True, tie_breaker=42)
    request = stun.parse_binding_request(data, "serverpassword0123456789")
    assert (request.username, request.use_candidate, request.priority) == ("srv:cli", True, 123)
    assert request.ice_controlling and request.tie_breaker == 42 and request.transaction_id == tid


@pytest.mark.parametrize("profiles", [("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"),
                                      ("AES_CM_128_HMAC_SHA1_80",)])
def test_dtls_client_against_server_endpoint_in_memory(profiles: tuple[str, ...]) -> None:
    client_cert, server_cert = Certificate.generate(time.time()), Certificate.generate(time.time())
    client = make_dtls_client(client_cert, server_cert.fingerprints(), list(profiles), 0.0)
    server = DtlsEndpoint(server_cert, "server", client_cert.fingerprints(), now=0.0)
    server.start(0.0)
    client.start(0.0)
    for _ in range(10):
        for datagram in client.take_datagrams():
            server.receive(datagram, 0.0)
        for datagram in server.take_datagrams():
            client.receive(datagram, 0.0)
    (c_event,), (s_event,) = client.take_events(), server.take_events()
    assert isinstance(c_event, DtlsConnected) and isinstance(s_event, DtlsConnected)
    assert profile_name(c_event.profile) == profile_name(profiles[0])
    name = profile_name(c_event.profile)
    c_keys, s_keys = c_event.keys, s_event.keys
    tx = make_srtp(name, c_keys.local_key, c_keys.local_salt, outbound=True)
    rx = make_srtp(name, s_keys.remote_key, s_keys.remote_salt, outbound=False)
    packet = media.rtp_header(96, 1, 2, 3, False) + b"payload" * 100
    assert rx.unprotect(tx.protect(packet)) == packet
    report = rtcp.serialize([rtcp.ReceiverReport(5, [])])
    assert rx.unprotect_rtcp_packet(tx.protect_rtcp_packet(report)) == report


# --- a minimal relay to drive the clients end to end -------------------------------------


class _RelayPeer:
    def __init__(self, relay: _LoopbackRelay, offer: str, role: str) -> None:
        self.role = role
        parsed = parse_answer(offer)  # the generic parser reads offers as well
        self.remote_ufrag, self.remote_fingerprints = parsed.ice_ufrag, parsed.fingerprints
        self.ufrag, self.pwd = f"r{len(relay.peers)}x", "relaypassword012345678901"
        self.addr: tuple[str, int] | None = None
        self.nominated_checks = 0
        self.dtls = DtlsEndpoint(relay.cert, "server", parsed.fingerprints, now=0.0)
        self.dtls.start(0.0)
        self.tx = self.rx = None
        lines = []
        for line in offer.splitlines():
            if line.startswith(("a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup", "a=ssrc",
                                "a=rtcp:", "a=msid")):
                continue
            if line.startswith("t="):
                line += "\r\na=ice-lite"
            line = {"a=sendonly": "a=recvonly", "a=recvonly": "a=sendonly"}.get(line, line)
            line = line.replace("a=simulcast:send", "a=simulcast:recv").replace(" send", " recv") \
                if line.startswith(("a=rid", "a=simulcast")) else line
            lines.append(line)
            if line.startswith("a=mid:"):
                lines += [f"a=ice-ufrag:{self.ufrag}", f"a=ice-pwd:{self.pwd}",
                          f"a=fingerprint:sha-256 {relay.cert.fingerprint_sha256()}", "a=setup:passive",
                          f"a=candidate:1 1 udp 2130706431 127.0.0.1 {relay.port} typ host"]
        self.answer = "\r\n".join(lines) + "\r\n"


class _LoopbackRelay(asyncio.DatagramProtocol):
    """One publisher's SRTP forwarded to every viewer (same SSRCs and seqs), RTCP from viewers
    forwarded to the publisher; `drop_every` drops every Nth video packet from the publisher
    (not its retransmissions) to exercise NACK end to end."""

    def __init__(self, drop_every: int = 0) -> None:
        self.cert = Certificate.generate(time.time())
        self.peers: dict[str, _RelayPeer] = {}
        self.by_addr: dict[tuple[str, int], _RelayPeer] = {}
        self.drop_every = drop_every
        self.video_forwarded = 0
        self.sent_seqs: set[tuple[int, int]] = set()
        self.port = 0

    async def __aenter__(self) -> _LoopbackRelay:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        app = web.Application()
        app.router.add_post("/{role}", self._post)
        app.router.add_delete("/{role}/{ufrag}", self._delete)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()
        self.transport.close()

    async def _post(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer secret":
            return web.Response(status=401, text="bad token")
        peer = _RelayPeer(self, await request.text(), request.match_info["role"])
        self.peers[peer.ufrag] = peer
        return web.Response(status=201, text=peer.answer, content_type="application/sdp",
                            headers={"Location": f"/{peer.role}/{peer.ufrag}"})

    async def _delete(self, request: web.Request) -> web.Response:
        self.peers.pop(request.match_info["ufrag"], None)
        return web.Response(status=200)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = asyncio.get_running_loop().time()
        if data[0] < 4:
            username = stun.peek_username(data)
            peer = self.peers.get(username.decode().split(":")[0]) if username else None
            if peer is None:
                return
            check = stun.parse_binding_request(data, peer.pwd)
            if check.use_candidate:  # move only to the nominated pair
                peer.nominated_checks += 1
                peer.addr = addr
                self.by_addr[addr] = peer
            self.transport.sendto(stun.binding_success(check, addr, peer.pwd), addr)
            return
        peer = self.by_addr.get(addr)
        if peer is None:
            return
        if 19 < data[0] < 64:
            peer.dtls.receive(data, now)
            for datagram in peer.dtls.take_datagrams():
                self.transport.sendto(datagram, addr)
            for event in peer.dtls.take_events():
                if isinstance(event, DtlsConnected):
                    name = profile_name(event.profile)
                    keys = event.keys
                    peer.tx = make_srtp(name, keys.local_key, keys.local_salt, outbound=True)
                    peer.rx = make_srtp(name, keys.remote_key, keys.remote_salt, outbound=False)
            return
        if peer.rx is None:
            return
        viewers = [p for p in self.peers.values() if p.role == "whep" and p.tx is not None and p.addr]
        if 192 <= data[1] <= 223:
            plain = peer.rx.unprotect_rtcp_packet(data)
            if peer.role == "whep":  # viewers' feedback goes upstream
                for publisher in self.peers.values():
                    if publisher.role == "whip" and publisher.tx is not None and publisher.addr:
                        self.transport.sendto(publisher.tx.protect_rtcp_packet(plain), publisher.addr)
            else:
                for viewer in viewers:
                    self.transport.sendto(viewer.tx.protect_rtcp_packet(plain), viewer.addr)
            return
        pt, seq, ssrc = data[1] & 0x7F, *struct.unpack_from("!H4xI", data, 2)  # clear header
        if peer.role == "whip" and pt != 111 and (ssrc, seq) not in self.sent_seqs:
            self.video_forwarded += 1
            if self.drop_every and self.video_forwarded % self.drop_every == 0:
                return  # lost on the way in: the publisher's resend is a first arrival
        try:
            plain = peer.rx.unprotect(data)
        except Exception:
            return
        self.sent_seqs.add((ssrc, seq))
        for viewer in viewers:
            self.transport.sendto(viewer.tx.protect(plain), viewer.addr)


def _latency_ms(viewer: PacketViewer, kind: str) -> float:
    return statistics.median(viewer.stats[kind]["latency_ns"]) / 1e6


async def test_clients_through_loopback_relay() -> None:
    async with _LoopbackRelay() as relay:
        publisher = PacketPublisher(relay.base + "/whip", "secret", keyframe_interval=0.5)
        await publisher.start()
        viewers = [PacketViewer(relay.base + "/whep", "secret", extra_check_addrs=i) for i in (0, 2)]
        for viewer in viewers:
            await viewer.start()
        for viewer in viewers:
            await viewer.wait_for(lambda v=viewer: v.stats["video"]["keyframes"] >= 3
                                  and v.stats["audio"]["packets"] >= 50, timeout=5)
        for viewer in viewers:
            stats = viewer.stats
            for kind in ("audio", "video"):
                assert stats[kind]["gaps"] == 0 and stats[kind]["duplicates"] == 0
                assert stats[kind]["latency_ns"] and _latency_ms(viewer, kind) < 50
                assert len(stats[kind]["ssrcs"]) == 1
            assert stats["video"]["resolution"] == (1280, 720)
            assert stats["rr_sent"] >= 1 and stats["twcc_sent"] >= 5 and stats["sr_received"] >= 1
            assert stats["srtp_profile"] == "SRTP_AEAD_AES_128_GCM"
        main, *extra = viewers[1].socket_stats
        assert len(extra) == 2 and all(s["stun_success"] >= 1 and s["rtp"] == 0 for s in extra)
        assert main["rtp"] > 0 and main["nominating"]
        pub_stats = publisher.stats
        assert pub_stats["keyframes_sent"] >= 3 and pub_stats["twcc_feedback_received"] >= 5
        assert pub_stats["receiver_reports"] >= 1
        for viewer in viewers:
            await viewer.stop()
        await publisher.stop()
        assert not relay.peers  # both DELETEd


async def test_nack_repairs_losses_and_pli_brings_a_keyframe() -> None:
    async with _LoopbackRelay(drop_every=7) as relay:
        publisher = PacketPublisher(relay.base + "/whip", "secret", video_codec="H264",
                                    keyframe_interval=0, srtp_profiles=("AES_CM_128_HMAC_SHA1_80",))
        await publisher.start()
        viewer = PacketViewer(relay.base + "/whep", "secret")
        await viewer.start()
        assert publisher.stats["keyframes_sent"] == 1  # only the first frame: the viewer missed it
        await viewer.wait_for(lambda: viewer.stats["video"]["repaired"] >= 10, timeout=5)
        await asyncio.sleep(0.3)
        video = viewer.stats["video"]
        assert video["lost_final"] == 0 and video["lost"] <= 2  # at most the last few in flight
        assert publisher.stats["retransmits"] >= 10 and viewer.stats["nacks_sent"] >= 10
        assert viewer.stats["video"]["keyframes"] == 0
        viewer.request_keyframe()
        await viewer.wait_for(lambda: viewer.stats["video"]["keyframes"] == 1, timeout=2)
        assert publisher.stats["plis_received"] == 1
        assert publisher.srtp_profile == "SRTP_AES128_CM_SHA1_80"
        assert viewer.stats["video"]["resolution"] == (1280, 720)  # read from the SPS
        await viewer.stop()
        await publisher.stop()


async def test_refused_offer_raises_whep_error() -> None:
    async with _LoopbackRelay() as relay:
        viewer = PacketViewer(relay.base + "/whep", "wrong")
        with pytest.raises(WhepError) as info:
            await viewer.start()
        assert info.value.status == 401 and "bad token" in info.value.body


# --- against sfu.Server --------------------------------------------------------------------


def _server_classes():  # type: ignore[no-untyped-def]
    import sfu

    return sfu.Server, sfu.Config


async def test_publisher_and_two_viewers_through_sfu_server() -> None:
    server_class, config_class = _server_classes()
    async with server_class(config_class.for_tests()) as server:
        publish = server.mint_token("shop1", publish=True)
        subscribe = server.mint_token("shop1", subscribe=True)
        async with PacketPublisher(server.whip_url("shop1"), publish) as publisher, \
                PacketViewer(server.whep_url("shop1"), subscribe) as first, \
                PacketViewer(server.whep_url("shop1"), subscribe, extra_check_addrs=2) as second:
            for viewer in (first, second):
                await viewer.wait_for(lambda v=viewer: v.stats["video"]["frames"] >= 30
                                      and v.stats["audio"]["packets"] >= 50, timeout=10)
            for viewer in (first, second):
                stats = viewer.stats
                for kind in ("audio", "video"):
                    summary = {k: v for k, v in stats[kind].items() if k != "latency_ns"}
                    assert stats[kind]["gaps"] == 0 and stats[kind]["duplicates"] == 0, summary
                    assert stats[kind]["latency_ns"] and _latency_ms(viewer, kind) < 50, summary
                    assert len(stats[kind]["ssrcs"]) == 1, summary
            main, *extra = second.socket_stats
            assert main["rtp"] > 0 and all(s["stun_success"] and not s["rtp"] for s in extra)
            assert publisher.stats["keyframes_sent"] >= 1


async def test_sfu_server_viewers_joining_together_start_on_a_keyframe() -> None:
    """Two viewers joining back to back: each one's first video packet starts a keyframe
    (the server gates new subscriptions on one), whatever the order of ICE and keyframes."""
    server_class, config_class = _server_classes()
    for _ in range(3):
        async with server_class(config_class.for_tests()) as server:
            publish = server.mint_token("shop1", publish=True)
            subscribe = server.mint_token("shop1", subscribe=True)
            async with PacketPublisher(server.whip_url("shop1"), publish), \
                    PacketViewer(server.whep_url("shop1"), subscribe, audio=False) as first, \
                    PacketViewer(server.whep_url("shop1"), subscribe, audio=False) as second:
                for viewer in (first, second):
                    await viewer.wait_for(lambda v=viewer: v.stats["video"]["frames"] >= 30, timeout=10)
                for viewer in (first, second):
                    video = viewer.stats["video"]
                    summary = {k: v for k, v in video.items() if k != "latency_ns"}
                    assert video["packets_before_keyframe"] == 0 and video["keyframes"] >= 1, summary
                    assert video["resolution"] == (1280, 720)
