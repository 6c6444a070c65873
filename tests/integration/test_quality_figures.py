"""The operators' figures (sfu/core/quality.py) through a real server: per-viewer and per-layer
figures in /api/stats, bounded-cardinality histograms in /metrics."""

from __future__ import annotations

import aiohttp

from sfu.testing import PacketPublisher, PacketViewer


async def test_join_loss_rtt_figures_in_stats_and_metrics(server):
    publish = server.mint_token("shop", publish=True)
    async with PacketPublisher(server.whip_url("shop"), publish) as publisher, \
            PacketViewer(server.whep_url("shop"), None) as viewer:
        await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 30 and viewer.stats["rr_sent"] >= 2,
                              timeout=10)

        def figures():
            stats = server.stats()
            (quality,) = [s["quality"] for s in stats["sessions"].values() if s["kind"] == "whep"]
            return stats, quality

        await viewer.wait_for(lambda: figures()[1]["loss"] is not None and figures()[1]["jitter_ms"] is not None,
                              timeout=10)
        stats, quality = figures()
        assert 0 < quality["join_ms"] <= quality["first_keyframe_ms"] < 5000, quality
        assert quality["loss"] == 0 and quality["freezes"] == 0 and quality["frozen"] is False, quality
        layers = [layer for t in stats["streams"]["shop"]["tracks"] for layer in t["layers"]]
        assert all(layer["loss"] == 0 for layer in layers), layers  # lossless loopback
        assert all(layer["expected"] >= layer["packets"] > 0 for layer in layers), layers
        (video,) = stats["streams"]["shop"]["tracks"][1]["layers"]
        assert 20 <= video["fps"] <= 40, video  # the test publisher sends 30 frames a second

        admin = {"Authorization": f"Bearer {server.mint_admin_token()}"}
        async with aiohttp.ClientSession() as http, http.get(server.http_url + "/metrics", headers=admin) as resp:
            text = await resp.text()
        assert "sfu_join_seconds_count 1.0" in text and "sfu_first_keyframe_seconds_count 1.0" in text
        assert 'sfu_loss_fraction_bucket{le="0.0",leg="publisher"}' in text
        assert 'sfu_loss_fraction_count{leg="viewer"}' in text and 'sfu_rtt_seconds_count{leg="viewer"}' in text
        assert 'sfu_viewers{layer="none"} 1.0' in text  # no simulcast: the layer has no rid
        for session_id, session in server.manager.sessions.items():  # no per-session labels, no secrets
            assert session_id not in text and session.handle not in text
        assert publisher
