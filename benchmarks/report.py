"""The machine a run happened on, the one table of figures, and the results files."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

# (label, comparison, goal, where the figure sits in the results)
TARGETS: list[tuple[str, str, float, tuple[str, ...]]] = [
    ("drain, 4 workers (tasks/s)", ">=", 7000, ("throughput", "4", "drain_per_s")),
    ("end-to-end, 4 workers (tasks/s)", ">=", 5000, ("throughput", "4", "e2e_per_s")),
    ("creates/s, one client", ">=", 2000, ("latency", "creates_per_s")),
    ("create-to-start p50 (ms)", "<=", 3, ("latency", "create_to_start_ms", "p50")),
    ("create-to-start p99 (ms)", "<=", 10, ("latency", "create_to_start_ms", "p99")),
    ("scaling efficiency, 8 workers", ">=", 0.9, ("scaling", "8", "efficiency")),
    ("failover after SIGKILL, slowest round (s)", "<", 1.0,
     ("failover", "sigkill", "running_max_s")),
    ("/api/stats p99 at 1M rows (ms)", "<", 20, ("read", "stats_ms", "p99")),
    ("worker peak RSS (MB)", "<", 80, ("memory_mb", "worker")),
    ("steady load at 500 tasks/s, deviation (%)", "<=", 5,
     ("load", "rates", "500", "deviation_pct")),
    ("create-to-start p99 at about half the maximum rate (ms)", "<=", 10,
     ("load", "half", "create_to_start_ms", "p99")),
    ("drain of the big backlog, against 20,000 (ratio)", ">=", 0.9,
     ("backlog", "ratio_to_small")),
    ("drain against pgqueuer, 4 workers x 64 slots (ratio)", ">=", 2.0,
     ("peers", "high", "ratio")),
    ("drain against pgqueuer, 4 workers x 1 slot (ratio)", ">=", 1.5, ("peers", "low", "ratio")),
    ("one-slot cycle p50 (ms)", "<=", 2, ("peers", "low", "slot_cycle_ms", "p50")),
    ("one-slot cycle p99 (ms)", "<=", 5, ("peers", "low", "slot_cycle_ms", "p99")),
]
_OPS = {">=": float.__ge__, "<=": float.__le__, "<": float.__lt__}


def machine() -> dict[str, Any]:
    """Cores, CPU, Python and the code's commit (the Postgres version is added later)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = ""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, check=False).stdout.strip()
    except OSError:
        pass
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return {"host": socket.gethostname(), "cores": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version(), "platform": platform.platform(),
            "event_loop": loop, "commit": commit}


def lookup(results: dict[str, Any], path: tuple[str, ...]) -> Any:
    """A figure by path; runs lists are indexed by their worker count."""
    node: Any = results
    for key in path:
        if isinstance(node, dict) and "runs" in node and key.isdigit():
            node = next((r for r in node["runs"] if r["workers"] == int(key)), None)
        elif isinstance(node, dict):
            node = node.get(key)
        else:
            return None
        if node is None:
            return None
    return node


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured figure and whether it is met."""
    out = []
    for label, op, goal, path in TARGETS:
        value = lookup(results, path)
        met = None if value is None else _OPS[op](float(value), float(goal))
        out.append({"target": label, "goal": f"{op} {goal:g}", "measured": value, "met": met})
    return out


Rows = list[tuple[str, str, str]]


def _throughput_rows(th: dict[str, Any]) -> Rows:
    rows: Rows = []
    for r in th.get("runs", []):
        rows.append((f"throughput {r['workers']}w x{r['concurrency']}",
                     "create / drain / e2e tasks/s",
                     f"{r['create_per_s']} / {r['drain_per_s']} / {r['e2e_per_s']}"))
        for phase in ("drain", "e2e"):
            cpu = r.get(f"{phase}_cpu_us_per_task")
            if cpu:
                rows.append((f"  CPU per task, {phase}", " / ".join(cpu) + " us",
                             " / ".join(str(v) for v in cpu.values())))
    return rows


def _latency_rows(lat: dict[str, Any]) -> Rows:
    rows: Rows = []
    for key in ("create_to_start_ms", "create_to_complete_ms", "request_ms"):
        s = lat[key]
        rows.append((f"latency {key[:-3].replace('_', '-')}", "p50 / p95 / p99 ms",
                     f"{s['p50']} / {s['p95']} / {s['p99']}"))
    rows.append(("creates, one client", "requests/s (while workers run them)",
                 f"{lat['creates_per_s']} ({lat['creates_while_running_per_s']})"))
    cpu = lat.get("creates_while_running_cpu_us")
    if cpu:
        rows.append(("  CPU per task, while running", " / ".join(cpu) + " us",
                     " / ".join(str(v) for v in cpu.values())))
    if "creates_in_flight_per_s" in lat:
        rows.append((f"  {lat['in_flight']} requests in flight", "requests/s",
                     str(lat["creates_in_flight_per_s"])))
    if "in_flight_e2e_per_s" in lat:
        rows.append((f"  {lat['in_flight']} in flight, workers running",
                     "requests/s; end to end tasks/s",
                     f"{lat['creates_in_flight_while_running_per_s']}; "
                     f"{lat['in_flight_e2e_per_s']}"))
    if "db_creates_per_s" in lat:
        rows.append(("  PostgreSQL alone", "SELECT 1/s; create statement/s",
                     f"{lat['db_roundtrips_per_s']}; {lat['db_creates_per_s']}"))
    return rows


def _scaling_rows(sc: dict[str, Any]) -> Rows:
    return [(f"scaling {r['workers']}w ({sc['task_seconds']:g}s tasks)",
             "tasks/s (ideal) efficiency",
             f"{r['per_s']} ({r['ideal_per_s']}) {r['efficiency']:.0%}") for r in sc["runs"]]


def _failover_rows(fo: dict[str, Any]) -> Rows:
    rows: Rows = []
    for key, what in (("sigkill", "SIGKILL"), ("partition", "network partition")):
        r = fo.get(key) or {}
        if "running_max_s" in r:
            rows.append((f"failover after {what} ({len(r['rounds'])} rounds)",
                         "median / max s to running again",
                         f"{r['running_median_s']} / {r['running_max_s']}"))
    return rows


def _read_rows(rd: dict[str, Any]) -> Rows:
    rows: Rows = []
    for key in ("stats_ms", "tasks_ms", "tasks_completed_ms"):
        s = rd[key]
        rows.append((f"GET {key[:-3]} ({rd['rows']:,} rows)", "p50 / p99 ms",
                     f"{s['p50']} / {s['p99']}"))
    rows.append((f"SSE fan-out, {rd['sse_clients']} clients", "events/s delivered (per client)",
                 f"{rd['sse_events_per_s']} ({rd['sse_per_client_per_s']})"
                 + ("" if rd["sse_complete"] else " INCOMPLETE")))
    return rows


def _load_rows(ld: dict[str, Any]) -> Rows:
    rows: Rows = []
    for r in ld["rates"].values():
        rows.append((f"steady load {r['rate']}/s for {r['seconds']:g} s",
                     "held tasks/s (deviation) per-second min-max",
                     f"{r['held_per_s']} ({r['deviation_pct']}%) {r['per_second_min']}-"
                     f"{r['per_second_max']}" + (f", {r['errors']} errors" if r["errors"] else "")))
        if "create_to_start_ms" in r:
            c = r["create_to_start_ms"]
            rows.append(("  create-to-start", "p50 / p95 / p99 ms",
                         f"{c['p50']} / {c['p95']} / {c['p99']}"))
    return rows


def _backlog_rows(b: dict[str, Any]) -> Rows:
    return [
        (f"drain of {b['tasks']:,} pending, 4 workers", "tasks/s (x the drain of "
         f"{b['small_tasks']:,})", f"{b['drain_per_s']} ({b['ratio_to_small']}x of "
         f"{b['small_drain_per_s']})"),
        ("  first / last tenth of the completions", "tasks/s",
         f"{b['first_tenth_per_s']} / {b['last_tenth_per_s']}"),
        ("  CPU per task", " / ".join(b["cpu_us_per_task"]) + " us",
         " / ".join(str(v) for v in b["cpu_us_per_task"].values())),
        ("  tables after the drain", "tasks / events MB",
         f"{b['table_mb']['tasks']} / {b['table_mb']['events']}"),
    ]


def _soak_rows(s: dict[str, Any]) -> Rows:
    return [
        (f"load {s['rate']}/s for {s['seconds']:g} s, retention {s['retention_s']:g} s",
         "tasks created; most task rows", f"{s['created']}; {s['task_rows_max']}"),
        *((f"  {t} on disk", "max / end MB (second half +MB)",
           f"{s[t + '_mb']['max']} / {s[t + '_mb']['end']} "
           f"({s[t + '_mb']['second_half_growth']:+})")
          for t in ("tasks", "events", "task_counts")),
    ]


def _peers_rows(pe: dict[str, Any]) -> Rows:
    rows: Rows = []
    for name in ("high", "low"):
        r = pe.get(name)
        if not r:
            continue
        rows.append((f"drain {r['tasks']:,}: TaskMaster {r['taskmaster']}",
                     "median tasks/s (runs)",
                     f"{r['taskmaster_median_per_s']} ({', '.join(map(str, r['taskmaster_per_s']))})"))
        rows.append((f"  pgqueuer {r['pgqueuer']}", "median tasks/s (runs)",
                     f"{r['pgqueuer_median_per_s']} ({', '.join(map(str, r['pgqueuer_per_s']))})"))
        rows.append(("  ratio TaskMaster / pgqueuer", "of medians (per round)",
                     f"{r['ratio']} ({', '.join(map(str, r['ratio_per_round']))})"))
        if "to_first_claim_s" in r:
            f = r["to_first_claim_s"]
            rows.append(("  of it, to the first task (processes starting)",
                         "TaskMaster / pgqueuer s", f"{f['taskmaster']} / {f['pgqueuer']}"))
        if "slot_cycle_ms" in r:
            c = r["slot_cycle_ms"]
            rows.append(("  one-slot cycle (completion to next start)", "p50 / p95 / p99 ms",
                         f"{c['p50']} / {c['p95']} / {c['p99']}"))
        for side in ("taskmaster", "pgqueuer"):
            cpu = r[f"{side}_cpu_us_per_task"]
            rows.append((f"  CPU per task, {side}", " / ".join(cpu) + " us",
                         " / ".join(str(v) for v in cpu.values())))
    return rows


_SCENARIO_ROWS = {"throughput": _throughput_rows, "latency": _latency_rows,
                  "scaling": _scaling_rows, "failover": _failover_rows, "read": _read_rows,
                  "load": _load_rows, "backlog": _backlog_rows, "soak": _soak_rows,
                  "peers": _peers_rows}


def _rows(results: dict[str, Any]) -> Rows:
    rows: Rows = []
    for name, rows_of in _SCENARIO_ROWS.items():
        r = results.get(name)
        if not r:
            continue
        if "error" in r:
            rows.append((f"{name} FAILED", "error", str(r["error"])[:80]))
        else:
            rows += rows_of(r)
    for role, mb in sorted(results.get("memory_mb", {}).items()):
        rows.append((f"peak RSS {role}", "MB", f"{mb}"))
    return rows


def table(results: dict[str, Any]) -> str:
    """Every figure of the run as one plain-text table, then the targets."""
    head = ("figure", "unit", "value")
    rows = _rows(results)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    met = results.get("targets", [])
    if met:
        lines.append("")
        for t in met:
            mark = {True: "met", False: "MISSED", None: "not run"}[t["met"]]
            lines.append(f"{mark:8} {t['target']}: {t['measured']} (goal {t['goal']})")
    return "\n".join(lines)


def write(results: dict[str, Any], folder: Path = RESULTS, *, latest: bool = True) -> Path:
    """Write <date>-<host>.json, and latest.json too when latest (a run of every scenario:
    the notebooks read it whole, so a run of a few must not replace it); the dated file's
    path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%S")
    path = folder / f"{stamp}-{results['machine']['host']}.json"
    text = json.dumps(results, indent=2, default=str) + "\n"
    path.write_text(text)
    if latest:
        (folder / "latest.json").write_text(text)
    return path
