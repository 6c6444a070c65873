// whip-whep.js: the small shared client for publish.html and watch.html.
//
// Non-trickle WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep): gather ICE candidates (or give up
// after ICE_GATHER_TIMEOUT_MS), POST the offer as application/sdp, require 201 Created with a
// Location, apply the answer, DELETE the session on teardown. Plus a plain-JSON summary of
// pc.getStats() that the product pages display and the end-to-end tests read.
//
// No dependencies, no build step, no network access beyond the server itself.
"use strict";

(function (global) {
  // Non-trickle: the offer carries what was gathered by then. On loopback host candidates arrive in
  // a few ms; 1 s bounds a gathering stuck on an unreachable STUN/TURN server or interface.
  const ICE_GATHER_TIMEOUT_MS = 1000;
  // Poll getStats() this often until the first video frame is decoded, so that firstFrameAt (the
  // time-to-first-frame oracle) is accurate to about this much.
  const FIRST_FRAME_POLL_MS = 20;
  // WHEP answers 409 while the stream is not live yet and 503 under overload, both with Retry-After:
  // retry after that long, bounded so that a viewer starts promptly once the stream goes live.
  const RETRY_DEFAULT_S = 1;
  const RETRY_MAX_S = 5;

  function params() {
    const q = new URLSearchParams(global.location.search);
    return {
      has: (k) => q.has(k),
      str: (k, dflt) => (q.has(k) ? q.get(k) : dflt),
      bool: (k, dflt) => {
        if (!q.has(k)) return dflt;
        const v = (q.get(k) || "").toLowerCase();
        return !(v === "0" || v === "false" || v === "no" || v === "off");
      },
      int: (k, dflt) => {
        const v = parseInt(q.get(k), 10);
        return Number.isFinite(v) ? v : dflt;
      },
      all: q,
    };
  }

  function waitIceGathering(pc, timeoutMs = ICE_GATHER_TIMEOUT_MS) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      function check() {
        if (pc.iceGatheringState === "complete") done();
      }
      function done() {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  class HttpError extends Error {
    constructor(status, body, method, url, retryAfter) {
      super(`${method} ${url}: HTTP ${status}${body ? ": " + body.trim().slice(0, 300) : ""}`);
      this.status = status;
      this.body = body;
      this.retryAfter = retryAfter;  // seconds, or null
    }
  }

  // POST an SDP offer (RFC 9725 §4.2). Returns {answer, location, etag}; throws HttpError unless 201.
  async function postOffer(url, offerSdp, token) {
    const headers = { "Content-Type": "application/sdp" };
    if (token) headers["Authorization"] = "Bearer " + token;
    const resp = await fetch(url, { method: "POST", headers, body: offerSdp, cache: "no-store" });
    const body = await resp.text();
    if (resp.status !== 201) {
      const ra = parseFloat(resp.headers.get("Retry-After"));
      throw new HttpError(resp.status, body, "POST", url, Number.isFinite(ra) ? ra : null);
    }
    const loc = resp.headers.get("Location");
    if (!loc) throw new Error(`POST ${url}: 201 without a Location header`);
    return {
      answer: body,
      // Location may be relative (RFC 9725 §4.2 allows either): resolve against the request URL.
      location: new URL(loc, url).href,
      etag: resp.headers.get("ETag"),
      iceServers: parseIceServerLinks(resp.headers.get("Link")),
    };
  }

  // Split a (possibly comma-joined) Link header value into its link-values, respecting <...> and
  // quoted strings (RFC 8288 §3), and keep those with rel="ice-server" (RFC 9725 §4.6) as
  // RTCIceServer dictionaries: {urls, username?, credential?}.
  function parseIceServerLinks(header) {
    const servers = [];
    if (!header) return servers;
    const values = [];
    let cur = "", inUri = false, inQuote = false;
    for (let i = 0; i < header.length; i++) {
      const c = header[i];
      if (inQuote) {
        cur += c;
        if (c === "\\" && i + 1 < header.length) cur += header[++i];
        else if (c === '"') inQuote = false;
      } else if (c === '"') { inQuote = true; cur += c; }
      else if (c === "<") { inUri = true; cur += c; }
      else if (c === ">") { inUri = false; cur += c; }
      else if (c === "," && !inUri) { values.push(cur); cur = ""; }
      else cur += c;
    }
    values.push(cur);
    for (const v of values) {
      const m = /^\s*<([^>]*)>(.*)$/.exec(v);
      if (!m) continue;
      const attrs = {};
      const re = /;\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))/g;
      let a;
      while ((a = re.exec(m[2])) !== null) {
        attrs[a[1].toLowerCase()] = a[2] !== undefined ? a[2].replace(/\\(.)/g, "$1") : a[3];
      }
      if ((attrs.rel || "").toLowerCase().split(/\s+/).indexOf("ice-server") < 0) continue;
      const server = { urls: m[1] };
      if (attrs.username !== undefined) server.username = attrs.username;
      if (attrs.credential !== undefined) server.credential = attrs.credential;
      servers.push(server);
    }
    return servers;
  }

  // The ICE servers the endpoint announces in its OPTIONS answer's Link headers (RFC 9725 §4.6),
  // asked before the peer connection exists so that they take part in its first gathering. [] when
  // the endpoint announces none or cannot be asked.
  async function discoverIceServers(url, token) {
    const headers = {};
    if (token) headers["Authorization"] = "Bearer " + token;
    try {
      const resp = await fetch(url, { method: "OPTIONS", headers, cache: "no-store" });
      return parseIceServerLinks(resp.headers.get("Link"));
    } catch (e) {
      return [];
    }
  }

  async function deleteSession(location, token, keepalive = false) {
    if (!location) return;
    const headers = {};
    if (token) headers["Authorization"] = "Bearer " + token;
    try {
      await fetch(location, { method: "DELETE", headers, keepalive });
    } catch (e) {
      // Best effort: the server also expires sessions on ICE consent failure (RFC 7675).
    }
  }

  // Reorder a transceiver's codecs so that `codec` (VP8, H264, VP9, AV1) is the only primary video
  // codec offered; keep the repair codecs (rtx, red, ulpfec) that refer to it. Returns the list set.
  function preferCodec(transceiver, kind, codec) {
    if (!codec || typeof RTCRtpSender.getCapabilities !== "function") return null;
    const caps = RTCRtpSender.getCapabilities(kind);
    if (!caps) return null;
    const wanted = (kind + "/" + codec).toLowerCase();
    const repair = new Set(["rtx", "red", "ulpfec", "flexfec-03"]);
    const primary = caps.codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
    if (primary.length === 0) {
      throw new Error(`this browser cannot send ${codec} (it offers ` +
        caps.codecs.map((c) => c.mimeType.split("/")[1]).filter((n) => !repair.has(n.toLowerCase()))
          .filter((n, i, a) => a.indexOf(n) === i).join(", ") + ")");
    }
    if (codec.toUpperCase() === "H264") {
      // Prefer packetization-mode=1 and constrained baseline (what every receiver decodes).
      const score = (c) => {
        const f = c.sdpFmtpLine || "";
        return (f.includes("packetization-mode=1") ? 0 : 2) + (/profile-level-id=42e0/.test(f) ? 0 : 1);
      };
      primary.sort((a, b) => score(a) - score(b));
    }
    const rest = caps.codecs.filter((c) => repair.has(c.mimeType.split("/")[1].toLowerCase()));
    const list = primary.concat(rest);
    transceiver.setCodecPreferences(list);
    return list;
  }

  function pick(report, keys) {
    const out = {};
    for (const k of keys) if (report[k] !== undefined) out[k] = report[k];
    return out;
  }

  const INBOUND_VIDEO_KEYS = ["framesDecoded", "framesReceived", "framesDropped", "frameWidth", "frameHeight",
    "framesPerSecond", "freezeCount", "totalFreezesDuration", "nackCount", "pliCount", "firCount",
    "packetsLost", "packetsReceived", "bytesReceived", "keyFramesDecoded", "jitter", "ssrc"];
  const INBOUND_AUDIO_KEYS = ["packetsReceived", "packetsLost", "bytesReceived", "totalSamplesReceived",
    "concealedSamples", "concealmentEvents", "jitter", "audioLevel", "ssrc"];
  const OUTBOUND_KEYS = ["rid", "framesSent", "framesEncoded", "frameWidth", "frameHeight", "framesPerSecond",
    "qualityLimitationReason", "bytesSent", "packetsSent", "retransmittedPacketsSent", "nackCount",
    "pliCount", "firCount", "keyFramesEncoded", "targetBitrate", "active", "ssrc", "scalabilityMode",
    "encoderImplementation"];

  // A plain JSON summary of pc.getStats(). Shape:
  //   {iceState, connectionState, signalingState, iceGatheringState,
  //    video: {framesDecoded, ..., codec} | null,      (inbound; summed if several)
  //    audio: {packetsReceived, totalSamplesReceived, concealedSamples, ..., codec} | null,
  //    outbound: {"<rid>"|"video"|"audio": {kind, framesSent, frameWidth, qualityLimitationReason, bytesSent, ...}},
  //    candidatePair: {currentRoundTripTime, availableOutgoingBitrate, ...} | null}
  async function summarizeStats(pc) {
    const out = {
      iceState: pc ? pc.iceConnectionState : null,
      connectionState: pc ? pc.connectionState : null,
      signalingState: pc ? pc.signalingState : null,
      iceGatheringState: pc ? pc.iceGatheringState : null,
      video: null,
      audio: null,
      outbound: {},
      candidatePair: null,
    };
    if (!pc || pc.signalingState === "closed") return out;
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((r) => byId.set(r.id, r));
    const codecOf = (r) => {
      const c = r.codecId && byId.get(r.codecId);
      return c ? c.mimeType.split("/")[1] : null;
    };
    const remoteInbound = [];
    report.forEach((r) => {
      if (r.type === "inbound-rtp") {
        const kind = r.kind || r.mediaType;
        const keys = kind === "video" ? INBOUND_VIDEO_KEYS : INBOUND_AUDIO_KEYS;
        const s = pick(r, keys);
        s.codec = codecOf(r);
        const prev = out[kind];
        if (!prev) {
          out[kind] = s;
        } else {
          // Several inbound streams of one kind: sum the counters, keep the largest frame size.
          for (const [k, v] of Object.entries(s)) {
            if (typeof v !== "number" || k === "ssrc") continue;
            if (k === "frameWidth" || k === "frameHeight") prev[k] = Math.max(prev[k] || 0, v);
            else prev[k] = (prev[k] || 0) + v;
          }
        }
      } else if (r.type === "outbound-rtp") {
        const kind = r.kind || r.mediaType;
        const s = pick(r, OUTBOUND_KEYS);
        s.kind = kind;
        s.codec = codecOf(r);
        const key = r.rid !== undefined && r.rid !== "" ? r.rid : kind;
        out.outbound[key] = s;
      } else if (r.type === "remote-inbound-rtp") {
        remoteInbound.push(r);
      } else if (r.type === "transport" && r.selectedCandidatePairId) {
        const p = byId.get(r.selectedCandidatePairId);
        if (p) {
          out.candidatePair = pick(p, ["state", "currentRoundTripTime", "availableOutgoingBitrate",
            "availableIncomingBitrate", "bytesSent", "bytesReceived"]);
          const local = byId.get(p.localCandidateId), remote = byId.get(p.remoteCandidateId);
          if (local) out.candidatePair.local = `${local.address}:${local.port} ${local.candidateType}`;
          if (remote) out.candidatePair.remote = `${remote.address}:${remote.port} ${remote.candidateType}`;
        }
      }
    });
    // What the server's receiver reports say about each sent stream (RFC 3550 §6.4.2): loss and RTT
    // on the publisher leg, as o.fractionLost (0..1), o.roundTripTime (s), o.packetsLost.
    for (const r of remoteInbound) {
      const local = byId.get(r.localId);
      if (!local) continue;
      const key = local.rid !== undefined && local.rid !== "" ? local.rid : (local.kind || local.mediaType);
      const o = out.outbound[key];
      if (!o) continue;
      Object.assign(o, pick(r, ["fractionLost", "roundTripTime", "packetsLost", "jitter"]));
    }
    return out;
  }

  // The object the pages expose as window.sfu (and the tests read).
  function makeState(role) {
    const st = {
      role,
      state: "new",
      error: null,
      pc: null,
      location: null,
      etag: null,
      postStartedAt: null,   // performance.now() just before the WHIP/WHEP POST
      answeredAt: null,      // performance.now() when the 201 arrived
      connectedAt: null,     // performance.now() when connectionState became "connected"
      firstFrameAt: null,    // performance.now() when inbound framesDecoded first became > 0
      firstAudioAt: null,    // performance.now() when inbound audio packetsReceived first became > 0
      iceServers: [],        // from the endpoint's Link headers (RFC 9725 §4.6)
      log: [],
      async stats() {
        const s = await summarizeStats(st.pc);
        s.state = st.state;
        s.error = st.error;
        s.location = st.location;
        s.postStartedAt = st.postStartedAt;
        s.answeredAt = st.answeredAt;
        s.connectedAt = st.connectedAt;
        s.firstFrameAt = st.firstFrameAt;
        s.firstAudioAt = st.firstAudioAt;
        s.iceServers = st.pc ? (st.pc.getConfiguration().iceServers || []) : [];
        return s;
      },
    };
    return st;
  }

  function setStatus(st, state, detail) {
    st.state = state;
    const line = detail ? `${state}: ${detail}` : state;
    st.log.push(`${Math.round(performance.now())} ms ${line}`);
    console.log(`[sfu ${st.role}] ${line}`);
    const el = document.getElementById("status");
    if (el) {
      el.textContent = line;
      el.className = state === "error" ? "status error" : (state === "connected" || state === "playing") ?
        "status ok" : "status";
    }
  }

  function fail(st, err) {
    const msg = err && err.message ? err.message : String(err);
    st.error = msg;
    setStatus(st, "error", msg);
  }

  function watchConnection(st, pc) {
    pc.addEventListener("connectionstatechange", () => {
      const cs = pc.connectionState;
      console.log(`[sfu ${st.role}] connectionState ${cs}`);
      if (cs === "connected" && st.connectedAt === null) st.connectedAt = performance.now();
      if (st.state === "error") return;
      if (cs === "connected") setStatus(st, st.role === "viewer" && st.firstFrameAt !== null ? "playing" : "connected");
      else if (cs === "failed") fail(st, new Error("connection failed (ICE or DTLS)"));
      else if (cs === "disconnected") setStatus(st, "disconnected");
    });
    pc.addEventListener("iceconnectionstatechange", () =>
      console.log(`[sfu ${st.role}] iceConnectionState ${pc.iceConnectionState}`));
  }

  // Poll until the first decoded video frame (and first audio packet), to time-stamp them. Each
  // receiver's own getStats() is much cheaper than the whole pc's, which matters with many viewers.
  function watchFirstMedia(st, pc) {
    const receiverOf = (kind) => {
      const t = pc.getTransceivers().find((x) => x.receiver.track && x.receiver.track.kind === kind);
      return t ? t.receiver : null;
    };
    const inbound = async (receiver) => {
      let found = null;
      if (receiver) (await receiver.getStats()).forEach((r) => { if (r.type === "inbound-rtp") found = r; });
      return found;
    };
    const video = receiverOf("video"), audio = receiverOf("audio");
    const tick = async () => {
      if (pc.signalingState === "closed") return;
      try {
        if (st.firstFrameAt === null && video) {
          const r = await inbound(video);
          if (r && r.framesDecoded > 0) {
            st.firstFrameAt = performance.now();
            if (st.state === "connected") setStatus(st, "playing");
          }
        }
        if (st.firstAudioAt === null && audio) {
          const r = await inbound(audio);
          if (r && r.packetsReceived > 0) st.firstAudioAt = performance.now();
        }
      } catch (e) {
        // getStats() can reject while the pc is being closed.
      }
      if ((video && st.firstFrameAt === null) || (audio && st.firstAudioAt === null)) {
        setTimeout(tick, FIRST_FRAME_POLL_MS);
      }
    };
    setTimeout(tick, FIRST_FRAME_POLL_MS);
  }

  // Non-trickle offer/answer over WHIP or WHEP. Fills st.location / st.etag / st.postStartedAt.
  // With `retries` > 0, a 409 (stream not live) or 503 (overloaded) is retried after Retry-After
  // with the same offer (the server kept no state for it); postStartedAt is the last POST's.
  async function negotiate(st, pc, url, token, retries = 0) {
    setStatus(st, "offering");
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await waitIceGathering(pc);
    let res;
    for (let attempt = 0; ; attempt++) {
      setStatus(st, "posting", url);
      st.postStartedAt = performance.now();
      try {
        res = await postOffer(url, pc.localDescription.sdp, token);
        break;
      } catch (e) {
        if (!(e instanceof HttpError) || (e.status !== 409 && e.status !== 503) || attempt >= retries) throw e;
        const wait = Math.min(e.retryAfter !== null ? e.retryAfter : RETRY_DEFAULT_S, RETRY_MAX_S);
        setStatus(st, "waiting", `HTTP ${e.status}, retrying in ${wait} s (${e.body.trim().slice(0, 100)})`);
        await new Promise((r) => setTimeout(r, wait * 1000));
        if (pc.signalingState === "closed") throw new Error("stopped");
      }
    }
    st.answeredAt = performance.now();
    st.location = res.location;
    st.etag = res.etag;
    if (res.iceServers.length) {
      st.iceServers = res.iceServers;  // for the next connection (reconnects), RFC 9725 §4.6
      try { pc.setConfiguration(Object.assign(pc.getConfiguration(), { iceServers: res.iceServers })); }
      catch (e) { console.log(`[sfu ${st.role}] setConfiguration: ${e}`); }
    }
    setStatus(st, "answered");
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: res.answer });
    } catch (e) {
      throw new Error("setRemoteDescription(answer) failed: " + (e && e.message ? e.message : e));
    }
    if (pc.connectionState !== "connected") setStatus(st, "connecting");
    else setStatus(st, "connected");
  }

  // Close the pc and DELETE the session. Safe to call twice.
  async function stop(st, token, keepalive = false) {
    const loc = st.location;
    st.location = null;
    if (st.pc) st.pc.close();
    if (st.state !== "error") setStatus(st, "stopped");
    await deleteSession(loc, token, keepalive);
  }

  function formatStats(s) {
    const lines = [];
    lines.push(`ice ${s.iceState}, connection ${s.connectionState}`);
    if (s.iceServers && s.iceServers.length) lines.push(`ice servers ${s.iceServers.map((x) => x.urls).join(" ")}`);
    if (s.candidatePair && s.candidatePair.currentRoundTripTime !== undefined) {
      lines.push(`rtt ${(s.candidatePair.currentRoundTripTime * 1000).toFixed(1)} ms`);
    }
    if (s.video) {
      const v = s.video;
      lines.push(`video ${v.codec || "?"} ${v.frameWidth || 0}x${v.frameHeight || 0} ` +
        `${v.framesPerSecond || 0} fps, decoded ${v.framesDecoded || 0}, lost ${v.packetsLost || 0}, ` +
        `freezes ${v.freezeCount || 0}, nack ${v.nackCount || 0}, pli ${v.pliCount || 0}`);
    }
    if (s.audio) {
      const a = s.audio;
      lines.push(`audio ${a.codec || "?"} packets ${a.packetsReceived || 0}, samples ${a.totalSamplesReceived || 0}, ` +
        `concealed ${a.concealedSamples || 0}`);
    }
    for (const [key, o] of Object.entries(s.outbound || {})) {
      if (o.kind === "video") {
        lines.push(`send ${key} ${o.codec || "?"} ${o.frameWidth || 0}x${o.frameHeight || 0} ` +
          `${o.framesPerSecond || 0} fps, ${Math.round((o.bytesSent || 0) / 1024)} KiB, ` +
          `limited by ${o.qualityLimitationReason || "none"}`);
      } else {
        lines.push(`send ${key} ${o.codec || "?"} ${Math.round((o.bytesSent || 0) / 1024)} KiB`);
      }
    }
    if (s.firstFrameAt !== null && s.postStartedAt !== null) {
      lines.push(`first frame ${(s.firstFrameAt - s.postStartedAt).toFixed(0)} ms after POST`);
    }
    return lines.join("\n");
  }

  // Refresh the page's stats box every second.
  function showStats(st, el) {
    if (!el) return;
    const tick = async () => {
      try {
        el.textContent = formatStats(await st.stats());
      } catch (e) {
        el.textContent = String(e);
      }
      if (st.pc && st.pc.signalingState !== "closed") setTimeout(tick, 1000);
    };
    tick();
  }

  // Browsers give the camera and microphone only to secure contexts (https://, or http://localhost):
  // opened over plain http from another host, navigator.mediaDevices is undefined. Say so in words.
  function insecureContextProblem() {
    if (global.isSecureContext && navigator.mediaDevices) return null;
    return `This page was opened over plain http (${location.origin}), so the browser will not ` +
      "share a camera or microphone with it: browsers allow that only on https:// pages or on " +
      "http://localhost. Ask the operator to start the server with --tls-cert and --tls-key and " +
      "open this page over https://, or publish with OBS instead.";
  }

  global.WhipWhep = {
    ICE_GATHER_TIMEOUT_MS, params, waitIceGathering, postOffer, parseIceServerLinks, discoverIceServers,
    deleteSession, preferCodec,
    summarizeStats, makeState, setStatus, fail, watchConnection, watchFirstMedia, negotiate, stop,
    formatStats, showStats, HttpError, insecureContextProblem,
  };
})(window);
