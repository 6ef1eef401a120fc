"""The benchmark harness keeps working: its arithmetic, its report, and a tiny real run.

Not a timed test: the run uses a handful of tasks and asserts only that every scenario
produced complete, sane figures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.cli import build_parser, options_from, run
from benchmarks.figures import percentile, summary_ms
from benchmarks.scenarios import Options
from taskmaster import cli
from taskmaster.cli import stack as cli_stack

TINY = Options(tasks=60, batch=25, concurrency=4, throughput_workers=(1,), latency_tasks=5,
               creates=10, in_flight=3, scaling_workers=(1, 2), scaling_tasks_per_slot=2,
               scaling_seconds=0.05, failover_rounds=1, partition_rounds=0, read_rows=500,
               read_requests=5, sse_clients=2, sse_events=50, load_rates=(20,),
               load_seconds=2.0, half_rate=40, backlog_tasks=300, soak_seconds=12.0,
               soak_rate=20, soak_retention=3.0, peer_rounds=1, peer_scale=0.002)


def test_percentile_interpolates() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))
    s = summary_ms([0.001, 0.002, 0.003])
    assert (s["p50"], s["max"], s["n"]) == (2.0, 3.0, 3)


def test_flags_shape_the_options() -> None:
    args = build_parser().parse_args(["--quick", "--tasks", "10", "--workers", "1,3",
                                      "--in-flight", "4", "--only", "latency", "--only", "read",
                                      "--load-rates", "10,100", "--load-seconds", "3"])
    opts = options_from(args)
    assert (opts.tasks, opts.throughput_workers, opts.in_flight) == (10, (1, 3), 4)
    assert (opts.load_rates, opts.load_seconds) == ((10, 100), 3.0)
    assert opts.read_rows < Options().read_rows  # --quick
    assert args.only == ["latency", "read"]
    peers = options_from(build_parser().parse_args(
        ["--peers", "pgqueuer", "--peer-rounds", "5", "--peer-scale", "0.5"]))
    assert (peers.peer_rounds, peers.peer_scale) == (5, 0.5)


def test_taskmaster_bench_hands_every_argument_to_the_benchmarks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = cli.build_parser().parse_args(["bench", "--only", "read", "--quick"])
    assert args.bench_args == ["--only", "read", "--quick"]
    monkeypatch.chdir(Path(__file__).parents[2])  # a source checkout's root
    with pytest.raises(SystemExit) as exc:
        cli_stack.cmd_bench(cli.build_parser().parse_args(["bench", "--help"]))
    assert exc.value.code == 0
    assert "python -m benchmarks" in capsys.readouterr().out


def test_targets_compare_in_the_right_direction() -> None:
    results = {"throughput": {"runs": [{"workers": 4, "drain_per_s": 7001, "e2e_per_s": 10}]},
               "latency": {"create_to_start_ms": {"p50": 3.0, "p99": 11.0}},
               "memory_mb": {"worker": 80.0}}
    met = {t["target"]: t["met"] for t in report.targets(results)}
    assert met["drain, 4 workers (tasks/s)"] is True
    assert met["end-to-end, 4 workers (tasks/s)"] is False
    assert met["create-to-start p50 (ms)"] is True  # <= 3
    assert met["create-to-start p99 (ms)"] is False
    assert met["worker peak RSS (MB)"] is False  # < 80
    assert met["failover after SIGKILL, slowest round (s)"] is None  # not run


async def test_a_tiny_run_of_every_scenario(admin_url: str, tmp_path) -> None:
    results = await run(TINY, database_url=admin_url)

    assert results["machine"]["cores"] >= 1 and results["machine"]["postgres"]
    (th,) = results["throughput"]["runs"]
    assert th["drain_per_s"] > 0 and th["e2e_per_s"] > 0 and th["create_per_s"] > 0
    lat = results["latency"]
    assert lat["create_to_start_ms"]["n"] == TINY.latency_tasks
    assert 0 < lat["create_to_start_ms"]["p50"] <= lat["create_to_complete_ms"]["p99"]
    assert lat["creates_per_s"] > 0 and lat["creates_while_running_per_s"] > 0
    assert lat["creates_in_flight_per_s"] > 0 and lat["in_flight"] == 3
    assert lat["creates_in_flight_while_running_per_s"] > 0 and lat["in_flight_e2e_per_s"] > 0
    assert set(lat["creates_while_running_cpu_us"]) >= {"coordinator", "postgres", "worker"}
    assert lat["db_roundtrips_per_s"] > lat["db_creates_per_s"] > 0
    assert [r["workers"] for r in results["scaling"]["runs"]] == [1, 2]
    assert all(0 < r["efficiency"] <= 1.05 for r in results["scaling"]["runs"])
    sigkill = results["failover"]["sigkill"]
    assert len(sigkill["rounds"]) == 1 and sigkill["running_max_s"] > 0
    assert set(th["drain_cpu_us_per_task"]) == {"coordinator", "postgres", "scheduler", "worker"}
    rd = results["read"]
    assert rd["sse_complete"] and rd["sse_delivered"] == TINY.sse_clients * TINY.sse_events
    assert rd["stats_ms"]["n"] == TINY.read_requests
    ld = results["load"]["rates"]["20"]
    assert ld["created"] == ld["expected"] == 40 and ld["held_per_s"] > 0  # the schedule's count
    half = results["load"]["half"]
    assert half["rate"] == 40 and half["created"] == 80
    assert 0 < half["create_to_start_ms"]["p50"] <= half["create_to_start_ms"]["p99"]
    bl = results["backlog"]
    assert bl["tasks"] == 300 and bl["drain_per_s"] > 0 and bl["ratio_to_small"] > 0
    assert bl["first_tenth_per_s"] > 0 and bl["last_tenth_per_s"] > 0
    soak = results["soak"]
    assert soak["created"] == 240 and len(soak["samples"]) >= 2
    assert soak["tasks_mb"]["max"] > 0 and soak["task_rows_max"] > 0
    for pair, tasks in (("high", 40), ("low", 10)):  # the peer comparison, both sides ran
        pe = results["peers"][pair]
        assert pe["tasks"] == tasks and pe["taskmaster_median_per_s"] > 0
        assert pe["pgqueuer_median_per_s"] > 0 and pe["ratio"] > 0
        assert set(pe["pgqueuer_cpu_us_per_task"]) == {"peer", "postgres"}
    assert results["peers"]["low"]["slot_cycle_ms"]["p50"] >= 0  # one-slot workers' cycle
    assert {"coordinator", "scheduler", "worker"} <= set(results["memory_mb"])
    assert len(results["targets"]) == len(report.TARGETS)

    text = report.table(results)
    assert "throughput 1w x4" in text and "SSE fan-out, 2 clients" in text
    assert "PostgreSQL alone" in text and "steady load 20/s for 2 s" in text
    assert "ratio TaskMaster / pgqueuer" in text
    assert "drain of 300 pending" in text and "load 20/s for 12 s, retention 3 s" in text
    path = report.write(results, tmp_path)
    assert json.loads(path.read_text()) == json.loads((tmp_path / "latest.json").read_text())
    # a run of a few scenarios writes its own file only: the notebooks read latest.json whole
    report.write({"machine": results["machine"], "peers": results["peers"]}, tmp_path,
                 latest=False)
    assert "throughput" in json.loads((tmp_path / "latest.json").read_text())


def test_a_failed_scenario_is_reported_not_hidden() -> None:
    results = {"latency": {"error": "TimeoutError: no answer", "memory_mb": {}}}
    results["targets"] = report.targets(results)
    text = report.table(results)
    assert "latency FAILED" in text and "TimeoutError: no answer" in text
    assert "not run  create-to-start p50 (ms)" in text
