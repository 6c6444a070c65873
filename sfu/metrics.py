"""Prometheus metrics read from the server's counters at scrape time.

Nothing on the packet path touches a metric object: the fast path keeps plain C counters, and this
collector turns them into samples when `/metrics` is scraped.
"""

from __future__ import annotations

import asyncio
import re

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily


class ServerCollector:
    """Samples a running `sfu.Server`'s router, sessions and streams."""

    def __init__(self, server) -> None:
        self.server = server

    def collect(self):
        manager = self.server.manager
        if manager is None:
            return
        router = manager.router
        traffic = CounterMetricFamily("sfu_udp_datagrams", "UDP datagrams on the media port", labels=["direction"])
        traffic.add_metric(["in"], router.datagrams_in)
        traffic.add_metric(["out"], router.datagrams_out)
        yield traffic
        volume = CounterMetricFamily("sfu_udp_bytes", "UDP bytes on the media port", labels=["direction"])
        volume.add_metric(["in"], router.bytes_in)
        volume.add_metric(["out"], router.bytes_out)
        yield volume
        gso = CounterMetricFamily(
            "sfu_udp_gso", "UDP GSO on the media port: sends that carried several datagrams, the datagrams "
            "they carried, and refusals by the kernel (resent one datagram per message; that peer's path gets no GSO "
            "from then on, and after 64 refusals no path does)", labels=["event"],
        )
        gso.add_metric(["sends"], router.gso_sends)
        gso.add_metric(["segments"], router.gso_segments)
        gso.add_metric(["refused"], router.gso_failures)
        yield gso
        source = CounterMetricFamily(
            "sfu_udp_source_address", "Source addresses on the media port (each peer answered from the address it "
            "sent to): sends refused from an address gone from the host (resent from the kernel's choice), and "
            "datagrams to a local address beyond the 32 the server tracks (answered from the kernel's choice)",
            labels=["event"],
        )
        source.add_metric(["refused"], router.source_refused)
        source.add_metric(["untracked"], router.locals_overflow)
        yield source
        guard = manager.simulcast.overload
        delay = GaugeMetricFamily(
            "sfu_media_queue_delay_seconds",
            "Longest time a datagram waited in the media socket before the server read it, at the last "
            "layer-control tick (kernel receive timestamps)",
        )
        delay.add_metric([], guard.last_delay_s)
        yield delay
        ceiling = GaugeMetricFamily(
            "sfu_overload_ceiling_bps",
            "Video bitrate no viewer is sent above while the server is overloaded (0: no ceiling)",
        )
        ceiling.add_metric([], guard.ceiling_bps or 0)
        yield ceiling
        cuts = CounterMetricFamily(
            "sfu_overload_cuts", "Times the overload ceiling was lowered (media waited over overload_queue_delay_ms)",
        )
        cuts.add_metric([], guard.cuts)
        yield cuts
        forwarded = CounterMetricFamily("sfu_rtp_forwarded_packets", "RTP packets forwarded to viewers")
        forwarded.add_metric([], router.forwarded)
        yield forwarded
        drops = CounterMetricFamily("sfu_dropped_datagrams", "Datagrams dropped on the media port, by reason", labels=["reason"])
        for reason, count in router.drop_counts.items():
            drops.add_metric([reason], count)
        yield drops
        events = CounterMetricFamily("sfu_events", "Session manager events and rejections, by name", labels=["event"])
        for name, count in manager.counters.items():
            events.add_metric([name], count)
        yield events
        repair = CounterMetricFamily(
            "sfu_repair_events",
            "Loss repair and keyframe events: NACKs received/sent, retransmissions served/missed, "
            "keyframe requests received/sent/suppressed, keyframe cache hits, duplicates dropped",
            labels=["event"],
        )
        for name, count in manager.repair_totals().items():
            repair.add_metric([name], count)
        yield repair
        sessions = GaugeMetricFamily("sfu_sessions", "Open sessions", labels=["kind"])
        kinds = {"whip": 0, "whep": 0}
        for session in manager.sessions.values():
            kinds[session.kind] = kinds.get(session.kind, 0) + 1
        for kind, count in kinds.items():
            sessions.add_metric([kind], count)
        yield sessions
        live = GaugeMetricFamily("sfu_live_streams", "Streams with a publisher")
        live.add_metric([], sum(1 for st in manager.streams.values() if st.live))
        yield live
        yield from _process(self.server)
        yield from _viewer_layers(manager)


LAYER_LABELS_MAX = 8  # distinct `layer` label values; rids beyond these are counted as "other"
LAYER_LABEL = re.compile(r"[A-Za-z0-9_-]{1,16}")  # a rid kept as a label value; others are "other"


def _layer_label(rid: str | None, seen: dict[str, None]) -> str:
    if rid is None:
        return "none"
    if not LAYER_LABEL.fullmatch(rid):
        return "other"
    if rid not in seen and len(seen) >= LAYER_LABELS_MAX:
        return "other"
    seen[rid] = None
    return rid


def _histogram(name: str, doc: str, hist, labels: list[str] | None = None, label_values: list[str] | None = None):
    family = HistogramMetricFamily(name, doc, labels=labels)
    family.add_metric(label_values or [], hist.cumulative(), sum_value=hist.sum)
    return family


def _viewer_layers(manager):
    """Bounded cardinality (no per-session labels; a session's figures are in /api/stats): viewers by
    the simulcast layer they get, inferred freezes, and the quality histograms (core/quality.py)."""
    viewers = GaugeMetricFamily("sfu_viewers", "Viewers by the video layer they get (its rid; none: no rid, or no layer yet)",
                                labels=["layer"])
    counts: dict[str, int] = {}
    seen: dict[str, None] = {}
    for session in list(manager.sessions.values()):
        if session.kind != "whep":
            continue
        state = manager.simulcast.stats_for(session)
        label = _layer_label(state["current_layer"] if state else None, seen)
        counts[label] = counts.get(label, 0) + 1
    for label, n in sorted(counts.items()):
        viewers.add_metric([label], n)
    yield viewers
    quality = manager.quality
    freezes = CounterMetricFamily("sfu_viewer_freezes", "Video stalls the server inferred: a live stream's "
                                  "video sent to a viewer stopped for a whole report interval")
    freezes.add_metric([], quality.freezes)
    yield freezes
    yield _histogram("sfu_join_seconds", "WHEP session created (its POST) to its first media packet sent",
                     quality.join_s)
    yield _histogram("sfu_first_keyframe_seconds", "WHEP session created (its POST) to its first video "
                     "keyframe sent", quality.first_keyframe_s)
    rtt = HistogramMetricFamily("sfu_rtt_seconds", "Round-trip times measured, per leg, once a report interval",
                                labels=["leg"])
    loss = HistogramMetricFamily("sfu_loss_fraction", "Fraction of packets lost per report interval, per leg "
                                 "(publisher: what the server expected; viewer: the viewer's receiver reports)",
                                 labels=["leg"])
    for leg in sorted(quality.rtt_s):
        rtt.add_metric([leg], quality.rtt_s[leg].cumulative(), sum_value=quality.rtt_s[leg].sum)
        loss.add_metric([leg], quality.loss[leg].cumulative(), sum_value=quality.loss[leg].sum)
    yield rtt
    yield loss
    limit = getattr(manager.config, "metrics_stream_labels", 0)
    if limit:
        yield from _per_stream(manager, limit)


def _per_stream(manager, limit: int):
    """Optional per-stream gauges for the `limit` most watched live streams (config
    metrics_stream_labels); the rest are summed under stream="other"."""
    viewers = GaugeMetricFamily("sfu_stream_viewers", "Viewers per stream (the most watched; others summed)",
                                labels=["stream"])
    bitrate = GaugeMetricFamily("sfu_stream_publisher_bitrate_bps", "Publisher bitrate per stream, all layers "
                                "(the most watched; others summed)", labels=["stream"])
    streams = sorted((st for st in manager.streams.values() if st.live), key=lambda st: (-len(st.viewers), st.name))
    other_v = other_b = 0.0
    for i, st in enumerate(streams):
        bps = sum(manager.simulcast.layer_stats(t, layer).get("bitrate_bps", 0) for t in st.tracks for layer in t.layers)
        if i < limit:
            viewers.add_metric([st.name], len(st.viewers))
            bitrate.add_metric([st.name], bps)
        else:
            other_v += len(st.viewers)
            other_b += bps
    if len(streams) > limit:
        viewers.add_metric(["other"], other_v)
        bitrate.add_metric(["other"], other_b)
    yield viewers
    yield bitrate


def _process(server):
    """What a leak would show first: asyncio tasks, HTTP connections, unconnected sessions."""
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:  # scraped outside the server's loop (a test calling collect())
        tasks = 0
    gauge = GaugeMetricFamily("sfu_asyncio_tasks", "asyncio tasks alive in the server's event loop")
    gauge.add_metric([], tasks)
    yield gauge
    guard = getattr(server, "http_guard", None)
    if guard is not None:
        yield from guard.metrics()
    admission = getattr(server.manager, "admission", None)
    if admission is not None:
        waiting = GaugeMetricFamily("sfu_unconnected_sessions", "Sessions created by a POST and not yet "
                                    "connected (no valid ICE check yet)")
        waiting.add_metric([], len(admission))
        yield waiting
        refused = CounterMetricFamily("sfu_unconnected_refused", "POSTs refused (503) at the bound on "
                                      "unconnected sessions, by reason", labels=["reason"])
        for reason, count in admission.refused.items():
            refused.add_metric([reason], count)
        yield refused


def register_server_metrics(registry: CollectorRegistry, server) -> None:
    registry.register(ServerCollector(server))
