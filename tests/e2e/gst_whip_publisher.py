#!/usr/bin/python3
"""An OBS-like WHIP publisher on GStreamer 1.22's webrtcbin (run it with Debian's /usr/bin/python3).

It behaves the way OBS Studio 30+ does on the wire, which is what the end-to-end tests need from it:
H.264 (x264, payload type 102) + Opus, webrtcbin's default RSA DTLS certificate, bundle-policy
max-bundle (so every section after the first is `a=bundle-only` with port 0), sendonly, and no ICE
candidates at all in the offer (OBS sends none and never trickles): the server learns our address
from our STUN checks. The offer is POSTed with urllib (Debian 12's GStreamer has no whipsink) with
`Authorization: Bearer <token>`; anything but 201 is an error (RFC 9725 §4.2). Candidates come in
the answer.

stdout: "CONNECTED" once webrtcbin's peer connection state says connected (ICE and DTLS are up);
with --count-frames, at exit, "FRAMES <n>" (video frames handed to the payloader since the start)
and "KEYS <i> ..." (the indices of the keyframes among them); nothing else.
stderr: progress and errors. Exit status 0 after --duration (or SIGTERM/SIGINT, after a DELETE of
the session), non-zero on any error.
"""
from __future__ import annotations

import argparse
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstVideo", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstVideo, GstWebRTC  # noqa: E402

H264_PT = 102  # OBS's payload types
OPUS_PT = 111
HTTP_TIMEOUT_S = 10.0
CAPS_WAIT_TIMEOUT_MS = 5000  # negotiated caps on every webrtcbin sink pad before the offer
CAPS_POLL_MS = 20
DRAIN_S = 1.0  # --count-frames: after --duration, time left for the last retransmissions


def log(msg: str) -> None:
    print(f"gst_whip_publisher: {msg}", file=sys.stderr, flush=True)


def strip_candidates(sdp: str) -> str:
    """OBS offers carry no candidates: drop a=candidate and a=end-of-candidates lines."""
    lines = sdp.replace("\r\n", "\n").split("\n")
    kept = [ln for ln in lines if not ln.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(kept).rstrip("\r\n") + "\r\n"


def build_pipeline(args: argparse.Namespace) -> str:
    # Audio first, then video: the m-line order of OBS's offers.
    parts = ["webrtcbin name=webrtc bundle-policy=max-bundle latency=0"]
    if not args.no_audio:
        parts.append(
            "audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! "
            "audio/x-raw,rate=48000,channels=2 ! "
            "opusenc bitrate=64000 ! "
            f"rtpopuspay pt={OPUS_PT} ! "
            f"application/x-rtp,media=audio,encoding-name=OPUS,payload={OPUS_PT},clock-rate=48000 ! "
            "webrtc."
        )
    if not args.no_video:
        parts.append(
            "videotestsrc is-live=true pattern=ball ! "
            f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 ! "
            "videoconvert ! queue max-size-buffers=2 leaky=downstream ! "
            f"x264enc name=venc tune=zerolatency speed-preset=ultrafast key-int-max={args.key_int_max} "
            f"bitrate={args.bitrate} ! "
            "video/x-h264,profile=constrained-baseline ! "
            f"rtph264pay name=vpay config-interval=-1 pt={H264_PT} aggregate-mode=zero-latency ! "
            f"application/x-rtp,media=video,encoding-name=H264,payload={H264_PT},clock-rate=90000 ! "
            "webrtc."
        )
    return "  ".join(parts)


class Publisher:
    def restrict_local_addresses(self) -> None:
        """Gather host candidates only on --local-address (libnice skips loopback by default, and the
        kernel drops a check from an interface address to 127.0.0.1: on a loopback-only test the
        publisher must check from loopback, as OBS on the same host as the server does)."""
        if not self.args.local_address:
            return
        gi.require_version("Nice", "0.1")
        from gi.repository import Nice

        # Keep both wrappers alive for the whole run: 1.22's bindings drop a reference they never
        # took when a wrapper of the ICE object is collected, which frees webrtcbin's agent.
        self._ice = self.webrtc.get_property("ice-agent")
        self._agent = agent = self._ice.get_property("agent")
        for text in self.args.local_address:
            address = Nice.Address.new()
            if not address.set_from_string(text):
                raise SystemExit(f"gst_whip_publisher: bad --local-address {text!r}")
            agent.add_local_address(address)

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = GLib.MainLoop()
        self.exit_code = 0
        self.location: str | None = None
        self.connected = False
        self.offer_started = False
        self.pipeline = Gst.parse_launch(build_pipeline(args))
        self.webrtc = self.pipeline.get_by_name("webrtc")
        self.restrict_local_addresses()
        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("notify::ice-connection-state", self.on_state)
        self.webrtc.connect("notify::connection-state", self.on_state)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self.on_message)

        # OBS publishes; it never receives.
        i = 0
        while True:
            trans = self.webrtc.emit("get-transceiver", i)
            if trans is None:
                break
            trans.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
            video_index = 0 if args.no_audio else 1  # audio first, as in build_pipeline
            if args.nack and i == video_index and not args.no_video:
                # answer the server's NACKs (webrtcbin: RFC 4588 RTX from a send history)
                trans.set_property("do-nack", True)
            i += 1

        self.draining = False
        self.frames = 0
        self.keyframes: list[int] = []  # indices (among all frames encoded) of the keyframes
        if args.count_frames:
            pay = self.pipeline.get_by_name("vpay")
            if pay is not None:
                pay.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self.count_frame)

        if args.ignore_pli:
            # Keyframe requests (RTCP PLI/FIR from the server) reach the encoder as upstream
            # GstForceKeyUnit events on its src pad; OBS ignores them, so drop them there.
            enc = self.pipeline.get_by_name("venc")
            if enc is not None:
                enc.get_static_pad("src").add_probe(Gst.PadProbeType.EVENT_UPSTREAM, self.drop_force_key_unit)

    def count_frame(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        """One encoded frame (an access unit from x264enc) on its way to the payloader."""
        if self.draining:
            return Gst.PadProbeReturn.DROP  # past --duration: nothing new, retransmissions still served
        buf = info.get_buffer()
        if buf is not None and not buf.has_flags(Gst.BufferFlags.DELTA_UNIT):
            self.keyframes.append(self.frames)
        self.frames += 1
        return Gst.PadProbeReturn.OK

    def drop_force_key_unit(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        event = info.get_event()
        if event is not None and GstVideo.video_event_is_force_key_unit(event):
            log("dropped a keyframe request (--ignore-pli)")
            return Gst.PadProbeReturn.DROP
        return Gst.PadProbeReturn.OK

    # -- lifecycle

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, self.on_signal, sig)
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            log("pipeline failed to start")
            return 2
        if self.args.duration > 0:
            GLib.timeout_add(int(self.args.duration * 1000), self.on_duration)
        if self.args.connect_timeout > 0:
            GLib.timeout_add(int(self.args.connect_timeout * 1000), self.on_connect_timeout)
        self.loop.run()
        self.pipeline.set_state(Gst.State.NULL)
        if self.args.count_frames:
            print(f"FRAMES {self.frames}", flush=True)
            print("KEYS " + " ".join(map(str, self.keyframes)), flush=True)
        return self.exit_code

    def finish(self, code: int) -> None:
        if code != 0 and self.exit_code == 0:
            self.exit_code = code
        if self.location:
            self.delete_session()
        if self.loop.is_running():
            self.loop.quit()

    def fail(self, msg: str, code: int = 1) -> None:
        log(f"error: {msg}")
        self.finish(code)

    def on_signal(self, sig: int) -> bool:
        log(f"signal {sig}: stopping")
        self.finish(0)
        return GLib.SOURCE_REMOVE

    def on_duration(self) -> bool:
        if self.args.count_frames and not self.draining:
            # stop sending video but stay for a second: the last frames' lost packets can still be
            # asked for and resent before the DELETE (the frame count is then exact)
            log(f"ran for {self.args.duration} s: no more video, stopping in {DRAIN_S} s")
            self.draining = True
            GLib.timeout_add(int(DRAIN_S * 1000), self.on_duration)
            return GLib.SOURCE_REMOVE
        log(f"ran for {self.args.duration} s: stopping")
        self.finish(0)
        return GLib.SOURCE_REMOVE

    def on_connect_timeout(self) -> bool:
        if not self.connected:
            self.fail(f"not connected after {self.args.connect_timeout} s "
                      f"(ice {self.webrtc.get_property('ice-connection-state').value_nick}, "
                      f"connection {self.webrtc.get_property('connection-state').value_nick})", 4)
        return GLib.SOURCE_REMOVE

    def on_message(self, bus: Gst.Bus, msg: Gst.Message) -> None:
        if msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            self.fail(f"{msg.src.get_name()}: {err.message} ({dbg})", 3)
        elif msg.type == Gst.MessageType.WARNING:
            err, dbg = msg.parse_warning()
            log(f"warning: {msg.src.get_name()}: {err.message}")
        elif msg.type == Gst.MessageType.EOS:
            self.finish(0)

    def on_state(self, webrtc: Gst.Element, pspec: object) -> None:
        ice = webrtc.get_property("ice-connection-state")
        conn = webrtc.get_property("connection-state")
        log(f"ice {ice.value_nick}, connection {conn.value_nick}")
        # The peer connection state is connected once ICE *and* DTLS are: media can flow.
        if conn == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and not self.connected:
            self.connected = True
            print("CONNECTED", flush=True)
        if ice == GstWebRTC.WebRTCICEConnectionState.FAILED or conn == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            GLib.idle_add(lambda: self.fail("ICE/DTLS connection failed", 5))

    # -- offer / answer

    def on_negotiation_needed(self, webrtc: Gst.Element) -> None:
        if self.offer_started:
            return
        self.offer_started = True
        # Wait for caps on every sink pad so the offer describes what is actually sent (fmtp from the
        # payloader: packetization-mode, profile-level-id, sprop-parameter-sets).
        waited = [0]

        def check() -> bool:
            pads = list(webrtc.sinkpads)
            if all(p.get_current_caps() is not None for p in pads) or waited[0] >= CAPS_WAIT_TIMEOUT_MS:
                if waited[0] >= CAPS_WAIT_TIMEOUT_MS:
                    log("no caps on some sink pads yet: offering anyway")
                promise = Gst.Promise.new_with_change_func(self.on_offer_created, webrtc, None)
                webrtc.emit("create-offer", None, promise)
                return GLib.SOURCE_REMOVE
            waited[0] += CAPS_POLL_MS
            return GLib.SOURCE_CONTINUE

        GLib.timeout_add(CAPS_POLL_MS, check)

    def on_offer_created(self, promise: Gst.Promise, webrtc: Gst.Element, _: object) -> None:
        promise.wait()
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            err = reply.get_value("error") if reply is not None else None
            GLib.idle_add(lambda: self.fail(f"create-offer failed: {err}"))
            return
        webrtc.emit("set-local-description", offer, Gst.Promise.new())
        sdp = strip_candidates(offer.sdp.as_text())
        GLib.idle_add(self.post_offer, sdp)

    def post_offer(self, sdp: str) -> bool:
        if self.args.print_offer:
            sys.stderr.write(sdp)
            sys.stderr.flush()
        headers = {"Content-Type": "application/sdp"}
        if self.args.token:
            headers["Authorization"] = f"Bearer {self.args.token}"
        req = urllib.request.Request(self.args.url, data=sdp.encode(), method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
                status = resp.status
                body = resp.read().decode("utf-8", "replace")
                location = resp.headers.get("Location")
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", "replace")
            self.fail(f"POST {self.args.url}: HTTP {e.code}: {body.strip()[:500]}", 6)
            return GLib.SOURCE_REMOVE
        except (urllib.error.URLError, OSError) as e:
            self.fail(f"POST {self.args.url}: {e}", 6)
            return GLib.SOURCE_REMOVE
        if status != 201:  # OBS fails on anything else, 200 included
            self.fail(f"POST {self.args.url}: HTTP {status}, expected 201", 6)
            return GLib.SOURCE_REMOVE
        if not location:
            self.fail(f"POST {self.args.url}: 201 without a Location header", 6)
            return GLib.SOURCE_REMOVE
        self.location = urllib.parse.urljoin(self.args.url, location)
        log(f"201 Created, session {self.location}")
        if self.args.print_offer:
            sys.stderr.write(body)
            sys.stderr.flush()
        res, msg = GstSdp.SDPMessage.new_from_text(body)
        if res != GstSdp.SDPResult.OK:
            self.fail("the answer is not parseable SDP", 7)
            return GLib.SOURCE_REMOVE
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        promise = Gst.Promise.new_with_change_func(self.on_answer_set, None, None)
        self.webrtc.emit("set-remote-description", answer, promise)
        return GLib.SOURCE_REMOVE

    def on_answer_set(self, promise: Gst.Promise, *_: object) -> None:
        promise.wait()
        reply = promise.get_reply()
        if reply is not None and reply.has_field("error"):
            err = reply.get_value("error")
            GLib.idle_add(lambda: self.fail(f"set-remote-description(answer) failed: {err}", 7))

    def delete_session(self) -> None:
        location, self.location = self.location, None
        headers = {}
        if self.args.token:
            headers["Authorization"] = f"Bearer {self.args.token}"
        req = urllib.request.Request(location, method="DELETE", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
                log(f"DELETE {location}: HTTP {resp.status}")
        except urllib.error.HTTPError as e:
            log(f"DELETE {location}: HTTP {e.code}")
        except (urllib.error.URLError, OSError) as e:
            log(f"DELETE {location}: {e}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="WHIP endpoint URL")
    ap.add_argument("--token", default="", help="sent as Authorization: Bearer <token>")
    ap.add_argument("--key-int-max", type=int, default=60, help="keyframe interval in frames")
    ap.add_argument("--bitrate", type=int, default=1500, help="x264 bitrate in kbit/s")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: run until signalled)")
    ap.add_argument("--connect-timeout", type=float, default=20, help="fail unless connected by then (0: never)")
    ap.add_argument("--local-address", action="append", default=[],
                    help="gather ICE host candidates only on this address (repeatable), e.g. 127.0.0.1")
    ap.add_argument("--no-audio", action="store_true")
    ap.add_argument("--no-video", action="store_true")
    ap.add_argument("--ignore-pli", action="store_true", help="drop keyframe requests, as OBS does")
    ap.add_argument("--nack", action="store_true", help="answer NACKs (webrtcbin do-nack: RTX retransmissions)")
    ap.add_argument("--count-frames", action="store_true", help='print "FRAMES <n>" at exit (see the docstring)')
    ap.add_argument("--print-offer", action="store_true", help="write the offer and the answer to stderr")
    args = ap.parse_args(argv)
    if args.no_audio and args.no_video:
        ap.error("nothing to publish: --no-audio and --no-video")
    Gst.init(None)
    missing = [f for f in ("webrtcbin", "x264enc", "opusenc", "rtph264pay", "rtpopuspay", "nicesrc")
               if Gst.ElementFactory.find(f) is None]
    if missing:
        log(f"missing GStreamer elements: {', '.join(missing)}")
        return 8
    return Publisher(args).run()


if __name__ == "__main__":
    sys.exit(main())
