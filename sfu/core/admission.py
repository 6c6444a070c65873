"""Admission of unconnected sessions: how many may wait for their first ICE check, and for how long.

A WHIP/WHEP POST creates a session (ICE credentials, a DTLS endpoint, its subscriptions) before the
client has proved it can receive anything at the address it claims: until its first valid ICE
connectivity check (RFC 8445 §7.3) the session is *unconnected* and costs memory for nothing. A
client that only POSTs (no token is needed to watch an open stream) could pile them up. This policy
bounds them, per client source address (the HTTP peer's IP) and in total, and frees the ones that
never connect after `timeout_s`.

Driven by the session manager, sans-IO (it passes `now`):
- `refusal(source, now)` before a session is created: None to admit, else the reason to refuse
  (503 + Retry-After upstream), counted in `refused` by reason;
- `opened(session_id, source, now)` once it is created, `connected(session_id)` at its first valid
  ICE check, `closed(session_id)` when it ends for any reason (each idempotent);
- `expired(now)` -> the ids of sessions still unconnected `timeout_s` after they were opened (they
  leave the policy; the manager closes them); `next_deadline()` -> when the next one is due.

Sessions opened without a source (an embedding application calling the API directly) count towards
the total only.
"""

from __future__ import annotations

from collections import Counter

# Defaults; `Config.max_unconnected_per_source`, `max_unconnected` and `unconnected_timeout_s`.
# A legitimate client sends its first check within an RTT or two of the 201 (about 0.1-1 s through a
# TURN relay); a join storm from one NAT or a reverse proxy is the largest burst one source makes.
MAX_UNCONNECTED_PER_SOURCE = 128  # sessions waiting for their first check from one IP
MAX_UNCONNECTED = 1024  # ... from everyone: about 25 MB at ~25 kB per unconnected session
UNCONNECTED_TIMEOUT_S = 10.0  # no valid check this long after the POST: the client is not coming
RETRY_AFTER_S = 2  # what a refused client is told: unconnected sessions clear within seconds


class UnconnectedSessions:
    """The bound on unconnected sessions (see the module docstring). A limit of 0 means none."""

    def __init__(self, per_source: int = MAX_UNCONNECTED_PER_SOURCE, total: int = MAX_UNCONNECTED,
                 timeout_s: float = UNCONNECTED_TIMEOUT_S) -> None:
        if per_source < 0 or total < 0 or not timeout_s > 0:
            raise ValueError("limits must be >= 0 and the timeout > 0")
        self.per_source = per_source
        self.total = total
        self.timeout_s = timeout_s
        self.refused: Counter[str] = Counter()
        self.expired_count = 0
        # session id -> (deadline, source); insertion order is deadline order (one timeout for all)
        self._waiting: dict[str, tuple[float, str | None]] = {}
        self._by_source: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._waiting)

    def waiting_from(self, source: str) -> int:
        return self._by_source[source]

    def refusal(self, source: str | None, now: float) -> str | None:
        """None if one more unconnected session may be opened for `source`, else why not. Sessions
        past their deadline still count until `expired` hands them to the manager (its timer is due
        then, so that is at most one timer tick)."""
        if self.total and len(self._waiting) >= self.total:
            reason = "unconnected-total"
        elif source is not None and self.per_source and self._by_source[source] >= self.per_source:
            reason = "unconnected-per-source"
        else:
            return None
        self.refused[reason] += 1
        return reason

    def opened(self, session_id: str, source: str | None, now: float) -> None:
        if session_id in self._waiting:
            return
        self._waiting[session_id] = (now + self.timeout_s, source)
        if source is not None:
            self._by_source[source] += 1

    def connected(self, session_id: str) -> None:
        self._forget(session_id)

    def closed(self, session_id: str) -> None:
        self._forget(session_id)

    def expired(self, now: float) -> list[str]:
        """Ids of sessions that never connected within `timeout_s`; they leave the policy."""
        return self._expire_due(now)

    def next_deadline(self) -> float | None:
        for deadline, _ in self._waiting.values():
            return deadline
        return None

    def stats(self) -> dict[str, object]:
        return {"waiting": len(self._waiting), "sources": len(self._by_source),
                "refused": dict(self.refused), "expired": self.expired_count}

    def _expire_due(self, now: float) -> list[str]:
        due = []
        for session_id, (deadline, _) in self._waiting.items():
            if deadline > now:
                break
            due.append(session_id)
        for session_id in due:
            self._forget(session_id)
        self.expired_count += len(due)
        return due

    def _forget(self, session_id: str) -> None:
        entry = self._waiting.pop(session_id, None)
        if entry is None or entry[1] is None:
            return
        source = entry[1]
        self._by_source[source] -= 1
        if self._by_source[source] <= 0:
            del self._by_source[source]
