"""Which simulcast layer one viewer gets: the manual limit, the bandwidth estimate, probing.

Inputs (with `now`): `on_feedback_summary(summary, now)` (one RTCP compound's transport-cc
feedback, summarised by the fast path; `on_feedback(results, now)` with per-packet records in
tests), fed to the viewer's `SendSideBwe`; for a viewer that negotiated REMB but not transport-cc,
`on_remb(bps, now)` and `on_receiver_loss(fraction, now)` feed a `RembEstimate` instead; `decide(now, options, audio_bps, sent_bps)` with the
track's layers ranked low to high (see `sfu/core/layers.py`). Output: a `Decision` (the target
layer, or None for no video; padding bytes to send as a probe). Sans-IO.

When to decide: every tick while anything is under way (a candidate confirming, a probe, a
switch); once a decision is steady, `settled(now, needs)` says whether another one would change
nothing (the estimate stays in the band where the current layer fits and the next does not, and
no hold-off or probe time has come), so the caller can skip it until a feedback or new layer
needs move the budget out of the band (see `Quiet`).

Rules:
- the manual limit (a layer's rid, a maximum height, paused) is a ceiling; the estimate may go
  lower. Unavailable layers (stopped arriving) are never chosen.
- audio is served first: the video budget is the estimate minus the audio being sent.
- the server's own ceiling (`ceiling_bps`, set under overload: `sfu/core/overload.py`) caps the
  estimate and counts as a confirmed shortage; nothing is probed for above it. A step down that
  only the ceiling forced is counted as "overload-down" and holds off upgrades like any other:
  without it, viewers climbed back faster than the machine could take them (one 1,000-viewer
  storm in three ended with 31 % loss; none of three with it).
- downgrade as soon as the current layer has not fitted for `DOWNGRADE_CONFIRM_S`; jump straight
  to the best layer that fits.
- upgrade one step at a time, only after the next layer has fitted for `UPGRADE_CONFIRM_S` and not
  before `hold_until` (set after every bandwidth downgrade, doubled when an upgrade fails soon).
- when the next layer does not fit the estimate, probe for it (padding so that the total reaches
  the next layer's need) no more often than the probe back-off allows; a probe that arrives intact
  lifts the estimate (see `SendSideBwe`), which then allows the upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .bwe import PacketResult, SendSideBwe, Summary
from .remb import RembEstimate

INITIAL_ESTIMATE_BPS = 2_500_000  # optimistic start: a bad link is corrected within ~1-2 s
DOWNGRADE_CONFIRM_S = 0.25  # the current layer must not fit for this long (estimate noise)
UPGRADE_CONFIRM_S = 1.0
UPGRADE_MARGIN = 0.9  # the next layer must need at most this share of the budget
DOWNGRADE_MARGIN = 1.0  # the current layer may need up to this share before we step down
HOLD_INITIAL_S = 4.0  # no upgrade this long after a bandwidth downgrade
HOLD_MAX_S = 60.0
FAILED_UPGRADE_WINDOW_S = 10.0  # a downgrade this soon after an upgrade doubles the hold
HOLD_RESET_S = 30.0  # a layer kept this long resets the hold to its initial value
PROBE_FACTOR = 1.3  # probe to this times the next layer's need (> 1 / UPGRADE_MARGIN, with room)
SEVERE_SHORTFALL = 0.6  # budget below this share of the current need: step down even if not congested
PROBE_DURATION_S = 0.3
PROBE_GRACE_S = 1.0  # after a probe, its own queueing / loss does not count as congestion
PROBE_INTERVAL_S = 3.0  # first probe back-off; doubled per failed probe
PROBE_INTERVAL_MAX_S = 30.0
MIN_LAYER_BPS = 30_000  # a layer's need is at least this (a just-started layer measures ~0)
INF = float("inf")


@dataclass(frozen=True)
class LayerOption:
    """One layer of the viewer's track as the allocator sees it (ranked low to high by the caller)."""

    key: object
    rid: str | None
    bitrate_bps: float
    width: int = 0
    height: int = 0
    available: bool = True

    @property
    def need_bps(self) -> float:
        return max(self.bitrate_bps * 1.05, MIN_LAYER_BPS)  # packet overhead


@dataclass
class ManualLimit:
    """What the viewer (or the app) asked for; all None / False: automatic."""

    layer: str | None = None
    max_height: int | None = None
    paused: bool = False

    def allows(self, option: LayerOption, ranked: list[LayerOption]) -> bool:
        if self.max_height is not None and option.height and option.height > self.max_height:
            return False
        if self.layer is not None:
            chosen = next((o for o in ranked if o.rid == self.layer), None)
            if chosen is not None and ranked.index(option) > ranked.index(chosen):
                return False
        return True


@dataclass
class Decision:
    target: object | None  # an option's key; None: no video
    padding_bytes: int = 0
    stop_padding: bool = False  # a probe was cut short: drop any padding budget left
    reason: str = ""


@dataclass(slots=True)
class Quiet:
    """A steady decision that stays the same, for the same ranked layers, while
    `needs[current] <= (estimate - audio_bps) * DOWNGRADE_MARGIN` and (when `following` is set)
    `needs[following] > (estimate - audio_bps) * UPGRADE_MARGIN`, until `until` (the end of the
    hold-off or the next probe time)."""

    current: object
    following: object | None
    audio_bps: float
    until: float


@dataclass
class _Candidate:
    key: object
    since: float


@dataclass
class VideoAllocator:
    """Layer choice for one viewer's video track (see the module docstring for the rules)."""

    limit: ManualLimit = field(default_factory=ManualLimit)
    current: object | None = None
    hold_until: float = 0.0
    hold_s: float = HOLD_INITIAL_S
    last_upgrade_at: float | None = None
    last_switch_at: float | None = None
    next_probe_at: float = 0.0
    probe_interval_s: float = PROBE_INTERVAL_S
    upgrades: int = 0
    downgrades: int = 0
    _down: _Candidate | None = None
    _up: _Candidate | None = None

    def decide(
        self, now: float, ranked: list[LayerOption], budget_bps: float, congested: bool = True
    ) -> tuple[object | None, str, LayerOption | None]:
        """(target key, reason, the next layer up worth probing for or None). `congested`: the
        estimator sees a real shortage (see `SendSideBwe.congested`); without it a low estimate
        (one noisy overuse signal) only steps down when far below the current layer's need."""
        if self.limit.paused:
            return None, "paused", None
        allowed = [o for o in ranked if o.available and self.limit.allows(o, ranked)]
        if not allowed:
            allowed = [o for o in ranked if o.available][:1]  # below every limit: the lowest there is
        if not allowed:
            return self.current, "no-layer-available", None
        by_key = {o.key: o for o in allowed}
        current = by_key.get(self.current)
        fitting = [o for o in allowed if o.need_bps <= budget_bps * DOWNGRADE_MARGIN]
        best_fit = fitting[-1] if fitting else allowed[0]
        if current is None:
            # first choice, the current layer stopped or the limit moved: the best that fits now
            self._down = self._up = None
            return best_fit.key, "initial" if self.current is None else "current-unavailable", None
        index = allowed.index(current)
        short = current.need_bps > budget_bps * DOWNGRADE_MARGIN
        if short and not congested and budget_bps >= current.need_bps * SEVERE_SHORTFALL:
            self._down = self._up = None
            return current.key, "estimate-low", None
        if short and index > 0:
            self._up = None
            if self._down is None:
                self._down = _Candidate(best_fit.key, now)
            if now - self._down.since >= DOWNGRADE_CONFIRM_S:
                self._down = None
                return best_fit.key, "bandwidth-down", None
            return current.key, "confirming-down", None
        self._down = None
        if index + 1 < len(allowed):
            nxt = allowed[index + 1]
            if nxt.need_bps <= budget_bps * UPGRADE_MARGIN and now >= self.hold_until:
                if self._up is None or self._up.key != nxt.key:
                    self._up = _Candidate(nxt.key, now)
                if now - self._up.since >= UPGRADE_CONFIRM_S:
                    self._up = None
                    return nxt.key, "bandwidth-up", None
                return current.key, "confirming-up", None
            self._up = None
            if nxt.need_bps > budget_bps * UPGRADE_MARGIN and now >= self.hold_until:
                return current.key, "steady", nxt
        else:
            self._up = None
        return current.key, "steady", None

    def switched(self, now: float, new: object | None, reason: str) -> None:
        """Book-keeping when the caller acts on a decision."""
        if reason in ("bandwidth-down", "overload-down"):
            self.downgrades += 1
            if self.last_upgrade_at is not None and now - self.last_upgrade_at < FAILED_UPGRADE_WINDOW_S:
                self.hold_s = min(self.hold_s * 2, HOLD_MAX_S)
            self.hold_until = now + self.hold_s
        elif reason == "bandwidth-up":
            self.upgrades += 1
            self.last_upgrade_at = now
        if self.last_switch_at is not None and now - self.last_switch_at >= HOLD_RESET_S:
            self.hold_s = HOLD_INITIAL_S
        self.last_switch_at = now
        self.current = new


class ViewerRateControl:
    """The bandwidth estimate and layer choice of one viewer (one transport, one video track).

    Drive with `on_feedback_summary` for every viewer feedback and `decide` every tick; act
    on the returned `Decision` (switch layer, add padding)."""

    def __init__(self, now: float, initial_bps: float = INITIAL_ESTIMATE_BPS, remb_only: bool = False) -> None:
        # a viewer without transport-wide feedback: its REMB and receiver-report loss (sfu/core/remb.py)
        self.bwe: SendSideBwe | RembEstimate = RembEstimate(initial_bps, now) if remb_only else SendSideBwe(initial_bps, now)
        self.allocator = VideoAllocator()
        self.probe_until: float | None = None
        self.probe_grace_until = 0.0
        self.probe_padding_bps = 0.0
        self.last_decide: float | None = None
        self.switch_count = 0
        self.last_reason = ""
        self.target_rid: str | None = None
        self.feedback_packets = 0
        self.quiet: Quiet | None = None  # set by a steady decision (see `settled`)
        # the server's own limit (sfu.core.overload): no layer above it, no probe for one
        self.ceiling_bps = INF

    @property
    def limit(self) -> ManualLimit:
        return self.allocator.limit

    def on_feedback(self, results: list[PacketResult], now: float) -> None:
        self.feedback_packets += 1
        self.bwe.on_feedback(results, now)

    def on_feedback_summary(self, summary: Summary, now: float) -> None:
        self.feedback_packets += summary.feedbacks
        self.bwe.on_feedback_summary(summary, now)

    def on_remb(self, bps: float, now: float) -> None:
        """A REMB from a viewer without transport-wide feedback (ignored otherwise: the send-side
        estimate from transport-cc is the better one, and browsers send both)."""
        if isinstance(self.bwe, RembEstimate):
            self.feedback_packets += 1
            self.bwe.on_remb(bps, now)

    def on_receiver_loss(self, fraction: float, now: float) -> None:
        """Receiver-report fraction lost of the viewer's video (REMB-only viewers: their loss bound)."""
        if isinstance(self.bwe, RembEstimate):
            self.bwe.on_loss(fraction, now)

    def settled(self, now: float, needs: dict[object, float]) -> bool:
        """True when `decide(now, ...)` with the same ranked layers as the last one (`needs`: their
        current `need_bps` by key) would return the same steady decision and change no state."""
        quiet = self.quiet
        if quiet is None or now >= quiet.until:
            return False
        budget = min(self.bwe.estimate_bps, self.ceiling_bps) - quiet.audio_bps
        need = needs.get(quiet.current)
        if need is None or need > budget * DOWNGRADE_MARGIN:
            return False
        if quiet.following is not None:
            following = needs.get(quiet.following)
            if following is None or following <= budget * UPGRADE_MARGIN:
                return False
        return True

    def decide(self, now: float, ranked: list[LayerOption], audio_bps: float, sent_bps: float) -> Decision:
        """`audio_bps`: what this viewer's audio takes; `sent_bps`: all media sent to it now."""
        self.quiet = None
        self.bwe.poll(now)
        alloc = self.allocator
        result = self.bwe.take_probe_result()
        if result is not None:
            self.probe_until = None
            if result.success:
                alloc.probe_interval_s = PROBE_INTERVAL_S
                alloc.next_probe_at = now  # the estimate moved: no wait for the next one
            else:
                alloc.next_probe_at = now + alloc.probe_interval_s
                alloc.probe_interval_s = min(alloc.probe_interval_s * 2, PROBE_INTERVAL_MAX_S)
        stop = False
        if self.probe_until is not None and (self.bwe.signal == "overuse" or self.bwe.probe_losses()):
            self.probe_until = None  # the link pushes back: stop at once, let the result come in
            self.bwe.end_probe_early(now)
            stop = True
        capped = self.ceiling_bps < self.bwe.estimate_bps
        budget = min(self.bwe.estimate_bps, self.ceiling_bps) - audio_bps
        # a ceiling is a real shortage: no waiting for the estimator to call it congestion
        congested = capped or (self.bwe.congested(now) and now >= self.probe_grace_until)
        target, reason, probe_for = alloc.decide(now, ranked, budget, congested)
        if probe_for is not None and probe_for.need_bps + audio_bps > self.ceiling_bps * UPGRADE_MARGIN:
            probe_for = None  # the server cannot send it now, whatever the link could take
        self.last_reason = reason
        if target != alloc.current:
            if reason == "bandwidth-down" and capped and self._fits_estimate(ranked, alloc.current, audio_bps):
                reason = "overload-down"  # the server's ceiling, not the link (counted apart)
            alloc.switched(now, target, reason)
            self.switch_count += 1
            self.probe_until = None
        padding = 0
        dt = now - self.last_decide if self.last_decide is not None else 0.0
        self.last_decide = now
        if self.probe_until is not None:
            if now < self.probe_until:
                padding = int(self.probe_padding_bps * dt / 8)
            else:
                self.probe_until = None
        elif probe_for is not None and now >= alloc.next_probe_at and not self.bwe.probing \
                and self.bwe.signal != "overuse" and self.bwe.loss_fraction < 0.02:
            total = probe_for.need_bps * PROBE_FACTOR + audio_bps
            self.probe_padding_bps = max(total - sent_bps, 0.0)
            if self.probe_padding_bps > 0:
                self.probe_until = now + PROBE_DURATION_S
                self.probe_grace_until = self.probe_until + PROBE_GRACE_S
                self.bwe.start_probe(total * 0.97, now, self.probe_until)
                alloc.next_probe_at = now + PROBE_DURATION_S  # re-armed by the result
        if reason == "steady" and self.probe_until is None and not stop and not self.bwe.probing and not self.bwe.has_probe_result:
            if probe_for is None:  # the top allowed layer, or held off: nothing until the hold ends
                self.quiet = Quiet(target, None, audio_bps, alloc.hold_until if now < alloc.hold_until else INF)
            elif now < alloc.next_probe_at:  # else a probe could have started and did not: not quiet
                self.quiet = Quiet(target, probe_for.key, audio_bps, alloc.next_probe_at)
        return Decision(target, padding, stop_padding=stop, reason=reason)

    def _fits_estimate(self, ranked: list[LayerOption], key: object, audio_bps: float) -> bool:
        option = next((o for o in ranked if o.key == key), None)
        return option is not None and option.need_bps <= (self.bwe.estimate_bps - audio_bps) * DOWNGRADE_MARGIN

    def stats(self) -> dict[str, object]:
        alloc = self.allocator
        return {
            **self.bwe.stats(),
            "reason": self.last_reason,
            "upgrades": alloc.upgrades,
            "downgrades": alloc.downgrades,
            "hold_s": alloc.hold_s,
            "probing": self.probe_until is not None,
        }
