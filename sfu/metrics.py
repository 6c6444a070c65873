"""Prometheus metrics read from the server's counters at scrape time.

Nothing on the packet path touches a metric object: the fast path keeps plain C counters, and this
collector turns them into samples when `/metrics` is scraped.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


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


def _viewer_layers(manager):
    """Per viewer (WHEP session): simulcast layer, send-side estimate, switches (core/simulcast.py)."""
    estimate = GaugeMetricFamily("sfu_viewer_bandwidth_estimate_bps", "Send-side bandwidth estimate towards each viewer",
                                 labels=["stream", "session"])
    layer = GaugeMetricFamily("sfu_viewer_layer", "Simulcast layer each viewer gets (1 per viewer; labels name it)",
                              labels=["stream", "session", "current", "target"])
    switches = CounterMetricFamily("sfu_viewer_layer_switches", "Simulcast layer switches done per viewer",
                                   labels=["stream", "session"])
    for session in list(manager.sessions.values()):
        if session.kind != "whep":
            continue
        state = manager.simulcast.stats_for(session)
        if state is None:
            continue
        labels = [session.stream.name, session.id]
        estimate.add_metric(labels, state["estimate_bps"])
        layer.add_metric(labels + [str(state["current_layer"] or ""), str(state["target_layer"] or "")], 1)
        switches.add_metric(labels, state["switches"])
    yield estimate
    yield layer
    yield switches


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
