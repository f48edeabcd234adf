"""Unit tests for the pure parts of ``bench/calls.py`` (run: ``.venv/bin/pytest bench/test_calls.py``).

The bench itself needs the sandbox; these check the arithmetic and parsing its table rests on.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calls

METRICS = """\
# TYPE reffection_active_calls gauge
reffection_active_calls 3.0
# TYPE reffection_event_handling_seconds histogram
reffection_event_handling_seconds_bucket{le="0.0005"} 50
reffection_event_handling_seconds_bucket{le="0.001"} 90
reffection_event_handling_seconds_bucket{le="0.02"} 99
reffection_event_handling_seconds_bucket{le="+Inf"} 100
reffection_event_handling_seconds_sum 0.25
reffection_event_handling_seconds_count 100
"""


def test_histogram_quantiles_are_bucket_upper_bounds() -> None:
    h = calls.parse_histogram(METRICS, calls.HIST)
    assert h.count == 100 and h.total == pytest.approx(0.25)
    assert h.quantile(0.5) == 0.0005
    assert h.quantile(0.9) == 0.001
    assert h.quantile(0.99) == 0.02
    assert h.quantile(1.0) == float("inf")


def test_histogram_delta_subtracts_an_earlier_scrape() -> None:
    later = calls.parse_histogram(METRICS, calls.HIST)
    earlier = calls.parse_histogram(METRICS.replace("} 50", "} 40").replace("count 100", "count 40")
                                    .replace("} 90", "} 40").replace("} 99", "} 40").replace("} 100", "} 40"),
                                    calls.HIST)  # fmt: skip
    delta = later.minus(earlier)
    assert delta.count == 60
    assert delta.cumulative == (10, 50, 59, 60)
    assert delta.quantile(0.5) == 0.001


def test_empty_histogram_has_zero_quantiles() -> None:
    h = calls.parse_histogram("", calls.HIST)
    assert h.count == 0 and h.quantile(0.99) == 0.0


def test_gauge() -> None:
    assert calls.parse_gauge(METRICS, "reffection_active_calls") == 3.0
    assert calls.parse_gauge(METRICS, "missing") is None


def test_bench_numbers_are_distinct_valid_and_bounded() -> None:
    numbers = calls.bench_numbers(100, 350)
    assert len(set(numbers)) == 350
    assert numbers[0] == "+442079460100" and numbers[-1] == "+442079460449"
    with pytest.raises(calls.BenchError) as err:
        calls.bench_numbers(900, 200)
    assert err.value.code == "range"


@pytest.mark.parametrize("line", ["to +442079460123 x", "442079460123", "dial 2079460123", "020 7946 0123",
                                  "020 7946 0123"[1:]])  # fmt: skip
def test_number_leaks_finds_every_format(line: str) -> None:
    assert calls.number_leaks(f"ok\n{line}\nok", ["+442079460123"]) == 1


def test_number_leaks_ignores_call_ids_and_other_numbers() -> None:
    text = "call placed call_id=c4845befc70675e9101f9\ncaller +442079460000"
    assert calls.number_leaks(text, ["+442079460123"]) == 0


def test_proc_counters_of_this_process() -> None:
    pid = os.getpid()
    assert calls.proc_cpu_seconds(pid) > 0
    rss, hwm = calls.proc_memory_kib(pid)
    assert 0 < rss <= hwm
    run, wait = calls.schedstat(pid, pid)
    assert run > 0 and wait >= 0
    busy, total = calls.host_cpu_seconds()
    assert 0 < busy < total


def test_spy_summary_separates_idle_loop_busy_loop_and_workers(tmp_path: Path) -> None:
    raw = tmp_path / "daemon.spy"
    raw.write_text(
        "thread (1): MainThread;run (asyncio/runners.py);EpollSelector.select (selectors.py) 60\n"
        "thread (1): MainThread;run (asyncio/runners.py);AriClient.request (reffection_ari/ari/client.py);"
        "ClientSession._request (aiohttp/client.py) 30\n"
        "thread (1): MainThread;run (asyncio/runners.py);AuditLog._write (reffection_ari/evidence/audit.py) 10\n"
        "thread (2): asyncio_0;Thread.run (threading.py);_worker (concurrent/futures/thread.py) 99\n"
        "thread (2): asyncio_0;_worker (concurrent/futures/thread.py);LeadOutbox._tx "
        "(reffection_ari/evidence/outbox.py) 5\n"
    )
    text = calls.spy_summary(raw)
    assert "busy 40% of the window's wall time (40 of 100 samples)" in text
    assert "executor threads busy 5 samples" in text
    assert " 75.0%  ARI REST requests (aiohttp client)" in text
    assert " 25.0%  lead: receipt/outbox/audit/vault/hash" in text


def _result(**kw: object) -> calls.SizeResult:
    base = calls.SizeResult(
        n=10, accepted=10, refused={}, completed_with_lead=9, outcomes={"ended/completed": 9, "ended/no_input": 1},
        unfinished=0, leads_delivered=9, peak_active=10, wall_s=9.0, ramp_s=0.3, daemon_cpu_s=0.2,
        asterisk_cpu_s=1.0, bench_cpu_s=0.01, other_cpu_s=0.5, host_util=0.4, events=80, latency_p50_ms=0.5,
        latency_p99_ms=2.0, latency_mean_ms=0.3, post_p50_ms=2.0, post_p99_ms=5.0, loop_run_s=0.1,
        loop_wait_s=0.05, asterisk_wait_s=0.2, daemon_rtt_ms=(1.0, 2.0, 3.0), asterisk_rtt_ms=(1.0, 1.5, 2.0),
        rss_idle_kib=50_000, rss_peak_kib=51_000, leftover_channels=0, leftover_bridges=0, leftover_after_stop=0,
        foreign_channels_max=0, log_number_lines=0, daemon_exit=0, profiled=False,
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def test_render_reports_ratio_per_call_figures_and_failures_by_reason() -> None:
    text = calls.render(
        [_result(), _result(n=20, accepted=20, completed_with_lead=20, outcomes={"ended/completed": 20})]
    )
    assert "daemon / Asterisk CPU" in text and "20.0%" in text
    assert "daemon CPU ms / call" in text and "20.0" in text  # 0.2 s over 10 calls
    assert 'N=10 failures by end reason: {"ended/no_input": 1}' in text
    assert "N=20 failures by end reason: none" in text


def test_failures_count_calls_without_a_lead() -> None:
    assert _result().failures == 1
    assert _result(completed_with_lead=10).failures == 0


def test_daemon_child_argument_shape_is_not_taken_for_bench_options() -> None:
    args = calls.parse_args(["--quick"])
    assert args.n == [5] and args.variant == "stock"
    with pytest.raises(SystemExit):
        calls.parse_args(["--n", "600", "500"])  # more than the 1000 numbers of the range
