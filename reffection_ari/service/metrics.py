"""Prometheus text exposition without a client library: a handful of counters, gauges and one
histogram are all the daemon publishes, and labels never carry personal data."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class Histogram:
    __slots__ = ("buckets", "count", "counts", "total")

    def __init__(self, buckets: tuple[float, ...] = _BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.total += value

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (coarse, for dashboards and benches)."""
        if not self.count:
            return 0.0
        target = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= target:
                return self.buckets[i] if i < len(self.buckets) else float("inf")
        return float("inf")


class Metrics:
    def __init__(self) -> None:
        self.calls_started: Counter[str] = Counter()  # by campaign
        self.calls_refused: Counter[str] = Counter()  # by reason code
        self.calls_ended: Counter[tuple[str, str]] = Counter()  # (state, end_reason)
        self.state_transitions: Counter[str] = Counter()  # by new state
        self.leads = 0
        self.confirms_rejected: Counter[str] = Counter()
        self.ari_reconnects = 0
        self.event_latency = Histogram()
        self.gauges: dict[str, Callable[[], float]] = {}
        #: counters kept by other parts (name -> help, label, values), e.g. DNC changes by source
        self.labelled: dict[str, tuple[str, str, Callable[[], dict[str, int]]]] = {}

    def render(self) -> str:
        out: list[str] = []

        def counter(name: str, help_: str, values: dict[str, int] | None = None, label: str = "") -> None:
            out.append(f"# HELP {name} {help_}\n# TYPE {name} counter")
            for key, n in sorted((values or {}).items()):
                out.append(f'{name}{{{label}="{key}"}} {n}')

        counter(
            "reffection_calls_started_total",
            "Calls placed, by campaign.",
            dict(self.calls_started),
            "campaign",
        )
        counter("reffection_calls_refused_total", "Call requests refused before dialing, by reason.",
                dict(self.calls_refused), "reason")  # fmt: skip
        out.append("# HELP reffection_calls_ended_total Calls finished, by final state and end reason.")
        out.append("# TYPE reffection_calls_ended_total counter")
        for (state, reason), n in sorted(self.calls_ended.items()):
            out.append(f'reffection_calls_ended_total{{state="{state}",reason="{reason}"}} {n}')
        counter("reffection_state_transitions_total", "Call state transitions, by new state.",
                dict(self.state_transitions), "state")  # fmt: skip
        counter("reffection_confirms_rejected_total", "Confirms rejected, by reason.",
                dict(self.confirms_rejected), "reason")  # fmt: skip
        out.append(
            "# HELP reffection_leads_total Consented leads stored.\n# TYPE reffection_leads_total counter"
        )
        out.append(f"reffection_leads_total {self.leads}")
        out.append("# HELP reffection_ari_reconnects_total ARI WebSocket reconnects.")
        out.append(
            f"# TYPE reffection_ari_reconnects_total counter\nreffection_ari_reconnects_total {self.ari_reconnects}"
        )
        for name, (help_, label, values) in sorted(self.labelled.items()):
            counter(name, help_, values(), label)
        for name, fn in sorted(self.gauges.items()):
            out.append(f"# TYPE {name} gauge\n{name} {fn()}")
        h = self.event_latency
        name = "reffection_event_handling_seconds"
        out.append(f"# HELP {name} Time from an ARI event's arrival to its commands being issued.")
        out.append(f"# TYPE {name} histogram")
        cumulative = 0
        for bound, n in zip(h.buckets, h.counts, strict=False):
            cumulative += n
            out.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        out.append(f'{name}_bucket{{le="+Inf"}} {h.count}')
        out.append(f"{name}_sum {h.total}\n{name}_count {h.count}")
        return "\n".join(out) + "\n"
