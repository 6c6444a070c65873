"""Hostile datagrams on the media port: dropped and counted by reason; the viewer keeps receiving."""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import struct

from aiortc_clients import AiortcPublisher, AiortcViewer, wait_until

from sfu.wire.stun import binding_request, parse_response

DATAGRAMS = 100_000


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        action = rng.random()
        if action < 0.5 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif action < 0.75 and len(buf) > 1:
            del buf[rng.randrange(len(buf)) :]
        else:
            buf += os.urandom(rng.randint(1, 64))
    return bytes(buf)


def _seeds(username: str, pwd: str) -> list[bytes]:
    """Plausible starting points: a valid check, DTLS, RTP and RTCP headers."""
    _, check = binding_request(username, pwd, use_candidate=False, priority=1, controlling=True, tie_breaker=7)
    rtp = struct.pack("!BBHII", 0x90, 96, 1, 1234, 0xDEADBEEF) + struct.pack("!HH", 0xBEDE, 1) + b"\x10\xff\x00\x00" + os.urandom(100)
    rtcp = struct.pack("!BBHI", 0x81, 201, 7, 0xDEADBEEF) + os.urandom(24)
    dtls = bytes([22, 0xFE, 0xFD]) + os.urandom(60)
    return [check, rtp, rtcp, dtls, b"\x00" * 20, bytes(range(256))]


async def test_fuzzed_datagrams_do_not_disturb_a_viewer(server):
    publisher = await AiortcPublisher(server, "fuzz").start()
    viewer = await AiortcViewer(server, "fuzz").start()
    try:
        await wait_until(lambda: viewer.frames["video"] >= 10, 20, "video before the fuzz")
        ufrag = re.search(r"a=ice-ufrag:(\S+)", viewer.answer).group(1)
        pwd = re.search(r"a=ice-pwd:(\S+)", viewer.answer).group(1)
        client_ufrag = re.search(r"a=ice-ufrag:(\S+)", viewer.pc.localDescription.sdp).group(1)
        username = f"{ufrag}:{client_ufrag}"
        loop = asyncio.get_running_loop()
        target = ("127.0.0.1", server.udp_port)
        rng = random.Random(20261121)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            # A valid, non-nominating check validates this address for the viewer's session, so
            # the junk below reaches SRTP/SRTCP authentication instead of the address filter.
            sock.setblocking(False)
            seeds = _seeds(username, pwd)
            await loop.sock_sendto(sock, seeds[0], target)
            parse_response(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))
            sent = 0
            frames_before = viewer.frames["video"]
            while sent < DATAGRAMS:
                for _ in range(100):
                    choice = rng.random()
                    if choice < 0.2:
                        data = os.urandom(rng.randint(0, 1400))
                    else:
                        data = _mutate(rng, rng.choice(seeds))
                    try:
                        sock.sendto(data, target)
                    except OSError:
                        pass
                    sent += 1
                await asyncio.sleep(0)  # pacing: let the server drain its socket between bursts
        await wait_until(lambda: viewer.frames["video"] >= frames_before + 30, 20, "video after the fuzz")
        stats = server.stats()
        drops = stats["router"]["drops"]
        assert drops["srtp-auth"] + drops["srtcp-auth"] + drops["srtp-other"] + drops["srtcp-other"] > 0
        assert stats["router"]["datagrams_in"] >= DATAGRAMS * 0.5  # most arrived (loopback may drop some)
        assert not any(key.startswith("errors-") for key in stats["counters"]), stats["counters"]
        whep = [s for s in stats["sessions"].values() if s["kind"] == "whep"]
        assert whep and whep[0]["connected"]
    finally:
        await viewer.close()
        await publisher.close()
