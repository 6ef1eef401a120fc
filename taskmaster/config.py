"""One frozen settings object, read from TASKMASTER_* environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "TASKMASTER_"


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


# secrets: each is read from TASKMASTER_X, or from the file TASKMASTER_X_FILE names (a
# mounted secret), never shown in a repr, and given to a child process only if it needs it
SECRETS = ("database_url", "api_token", "api_read_token", "cluster_token", "pool_token",
           "control_token")


# limits and batch sizes below 1 would refuse everything or never make progress
# the coordinator's assignment strategies (coordinator/assignment.py implements each)
ASSIGN_STRATEGIES = ("round-robin", "least-loaded", "random")
WORKER_STARTS = ("fork", "exec")
_AT_LEAST_ONE = ("max_batch_count", "max_body_bytes", "max_payload_bytes", "max_batch_bytes",
                 "max_page_size", "max_sse_clients", "sse_queue", "assign_batch", "status_batch",
                 "create_batch", "create_queue", "max_result_bytes", "max_worker_capacity",
                 "max_worker_commands", "max_worker_sessions", "worker_report_rate",
                 "load_max_pending")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every tunable of the stack; each field `x` is read from `TASKMASTER_X`."""

    # where things live
    home: Path = field(
        default=Path(".taskmaster"),
        metadata={"help": "state folder (embedded database, logs, stack file)"},
    )
    database_url: str = field(
        default="", repr=False,
        metadata={"help": "PostgreSQL URL; empty starts an embedded PostgreSQL under home"},
    )
    url: str = field(
        default="",
        metadata={"help": "scheduler URL the CLI's stack commands and the notebooks use "
                          "(empty: the stack file of home, else "
                          "http://127.0.0.1:<scheduler_port>)"},
    )
    # network
    host: str = field(
        default="127.0.0.1", metadata={"help": "address the scheduler and coordinator bind"}
    )
    scheduler_port: int = field(default=8081, metadata={"help": "HTTP port of the scheduler"})
    coordinator_port: int = field(default=8080, metadata={"help": "gRPC port of the coordinator"})
    coordinator: str = field(
        default="127.0.0.1:8080",
        metadata={"help": "coordinators a worker dials: host:port, a comma-separated list "
                          "(a:8080,b:8080), or dns:///name:port (every address the name "
                          "resolves to, gRPC round-robin); a lost one is replaced at once"},
    )
    coordinator_name: str = field(
        default="", metadata={"help": "coordinator display name (default coordinator-<port>; "
                                      "in a container its hostname)"}
    )
    # workers
    concurrency: int = field(default=1, metadata={"help": "task slots per worker"})
    tasks: str = field(
        default="", metadata={"help": "comma-separated modules that register extra task handlers"}
    )
    worker_name: str = field(
        default="", metadata={"help": "worker display name (default worker-<pid>)"}
    )
    prefetch: int = field(
        default=256,
        metadata={"help": "most deliveries a worker queues beyond its slots, to start one the "
                          "moment a slot frees; the coordinator sends them only while the "
                          "worker's tasks and their command's run short (see prefetch_below), "
                          "no other task is due before them, and no more than it finishes "
                          "in 0.1 s at its recent pace nor than it has run tasks so far. "
                          "0 = off (a delivery given back from the queue shows as "
                          "task_rejected and its next attempt)"},
    )
    prefetch_below: float = field(
        default=0.02,
        metadata={"help": "seconds: a worker is sent prefetched deliveries while its tasks' "
                          "recent mean run time is under this (0 = never prefetch)"},
    )
    # timing
    heartbeat_interval: float = field(
        default=2.0, metadata={"help": "seconds between worker heartbeats"}
    )
    heartbeat_misses: int = field(
        default=3, metadata={"help": "missed heartbeats before a worker is declared dead"}
    )
    assign_strategy: str = field(
        default="round-robin", metadata={"help": "round-robin, least-loaded or random"}
    )
    poll_interval: float = field(
        default=5.0,
        metadata={"help": "safety-net poll of the coordinator, seconds (NOTIFY wakes it first)"},
    )
    drain_grace: float = field(
        default=30.0, metadata={"help": "seconds a draining worker may finish its tasks"}
    )
    retry_base: float = field(
        default=0.5,
        metadata={"help": "first retry backoff, seconds (doubles per attempt, with jitter)"},
    )
    retry_max: float = field(default=60.0, metadata={"help": "largest retry backoff, seconds"})
    default_max_attempts: int = field(
        default=3, metadata={"help": "max_attempts of a task that does not give one"}
    )
    default_timeout: float = field(
        default=300.0, metadata={"help": "timeout_seconds of a task that does not give one"}
    )
    # limits
    max_batch_count: int = field(
        default=100_000, metadata={"help": "largest count accepted by POST /api/schedule/batch"}
    )
    create_batch: int = field(
        default=500,
        metadata={"help": "most concurrent POST /api/schedule creates sharing one statement"},
    )
    create_queue: int = field(
        default=10_000,
        metadata={"help": "POST /api/schedule creates waiting for a statement before 503"},
    )
    max_workers: int = field(
        default=32, metadata={"help": "most workers /api/pool/scale and `taskmaster scale` accept"}
    )
    worker_start: str = field(
        default="fork",
        metadata={"help": "how a local stack starts a worker: fork (from its fork server, "
                          "which has imported the worker: dialling in milliseconds) or exec "
                          "(a new interpreter each)"},
    )
    max_body_bytes: int = field(default=1_048_576, metadata={"help": "largest HTTP request body"})
    max_payload_bytes: int = field(
        default=65_536, metadata={"help": "largest task payload (JSON bytes)"}
    )
    max_batch_bytes: int = field(
        default=67_108_864,
        metadata={"help": "largest count x payload JSON bytes of one POST /api/schedule/batch"},
    )
    max_page_size: int = field(default=1000, metadata={"help": "largest ?limit= on GET /api/tasks"})
    max_sse_clients: int = field(default=100, metadata={"help": "concurrent SSE subscribers"})
    sse_queue: int = field(
        default=10_000, metadata={"help": "events buffered per SSE subscriber before it is cut off"}
    )
    sse_keepalive: float = field(
        default=15.0, metadata={"help": "seconds between SSE keepalive comments"}
    )
    sse_replay: int = field(
        default=10_000,
        metadata={"help": "events replayed to a client reconnecting with Last-Event-ID"},
    )
    event_retention: float = field(
        default=3600.0, metadata={"help": "seconds events are kept in PostgreSQL for replay"}
    )
    task_retention: float = field(
        default=604_800.0,
        metadata={"help": "seconds finished (completed, failed, cancelled) tasks are kept; "
                          "0 = forever"},
    )
    vacuum_dead_rows: int = field(
        default=10_000,
        metadata={"help": "the coordinator VACUUMs (and ANALYZEs) a table of the queue once "
                          "it holds this many dead rows and a tenth of its live ones, whether "
                          "or not the server's autovacuum runs; 0 = leave it to autovacuum"},
    )
    assign_batch: int = field(
        default=500, metadata={"help": "most tasks claimed in one assignment round"}
    )
    status_batch: int = field(
        default=1000, metadata={"help": "most status updates written in one statement"}
    )
    max_result_bytes: int = field(
        default=1_048_576, metadata={"help": "largest task result (JSON bytes) a worker may report"}
    )
    max_worker_capacity: int = field(
        default=256, metadata={"help": "most task slots one worker is given (a larger "
                                       "concurrency is cut to this)"}
    )
    max_worker_prefetch: int = field(
        default=256, metadata={"help": "most prefetched deliveries one worker is given (a larger "
                                      "prefetch is cut to this)"}
    )
    max_worker_commands: int = field(
        default=1000, metadata={"help": "most commands one worker may offer when it registers"}
    )
    max_worker_sessions: int = field(
        default=1000, metadata={"help": "most workers connected to one coordinator at once"}
    )
    worker_report_rate: float = field(
        default=50_000.0,
        metadata={"help": "status updates per second one worker may send (one second's worth "
                          "at once); past it the coordinator reads that worker more slowly"},
    )
    load_max_rate: float = field(
        default=1000.0,
        metadata={"help": "most tasks per second `taskmaster load` and the Steady load panel "
                          "create"},
    )
    load_max_pending: int = field(
        default=10_000,
        metadata={"help": "queue depth at which a steady load pauses until the queue is "
                          "shorter"},
    )
    autoscale: str = field(
        default="",
        metadata={"help": "MIN:MAX workers the local stack's autoscaler keeps the pool "
                          "between (empty: off; `taskmaster up --autoscale 1:6`)"},
    )
    autoscale_target: str = field(
        default="wait=2",
        metadata={"help": "what the autoscaler aims at: wait=SECONDS of queue wait or "
                          "backlog=TASKS waiting per slot"},
    )
    autoscale_cooldown_up: float = field(
        default=3.0,
        metadata={"help": "seconds demand must stay higher (and since the last resize) "
                          "before the autoscaler adds workers"},
    )
    autoscale_cooldown_down: float = field(
        default=15.0,
        metadata={"help": "seconds demand must stay lower (and since the last resize) "
                          "before the autoscaler drains workers"},
    )
    autoscale_interval: float = field(
        default=1.0, metadata={"help": "seconds between two looks of the autoscaler"}
    )
    rate_limit: float = field(
        default=0.0, metadata={"help": "requests per second per client, 0 = unlimited"}
    )
    rate_limit_burst: int = field(
        default=0,
        metadata={"help": "requests a client may send at once before rate_limit applies "
                          "(0 = twice the rate, at least 1)"},
    )
    # security and operations
    api_token: str = field(
        default="", repr=False,
        metadata={"help": "bearer token required by mutating HTTP endpoints"}
    )
    api_read_token: str = field(
        default="", repr=False,
        metadata={"help": "bearer token required by reading HTTP endpoints"}
    )
    allowed_hosts: str = field(
        default="",
        metadata={"help": "comma-separated host names the scheduler answers to besides IP "
                          "addresses, one-label names (localhost, a service), names under "
                          ".localhost/.local/.internal/.home.arpa and this machine's name "
                          "(others get 421: DNS rebinding); * = any"},
    )
    allowed_origins: str = field(
        default="",
        metadata={"help": "comma-separated web page origins (http://host:port) allowed to call "
                          "the API from a browser (others get 403); * = any"},
    )
    cluster_token: str = field(
        default="", repr=False,
        metadata={"help": "token a worker must present to join the coordinator"}
    )
    pool_token: str = field(
        default="", repr=False,
        metadata={"help": "token the pool API (/api/pool/*, /api/reset) needs in the "
                          "X-TaskMaster-Pool-Token header; `taskmaster up` and `taskmaster demo` "
                          "generate one when none is set and leave it in an owner-only file "
                          "(README, Security)"},
    )
    no_pool_token: bool = field(
        default=False,
        metadata={"help": "`taskmaster up`/`demo` generate no pool token: their pool API needs "
                          "none (any program on this machine may scale, kill and reset)"},
    )
    control_token: str = field(
        default="", repr=False,
        metadata={"help": "secret the scheduler shows the supervisor's control API (`taskmaster "
                          "up` generates it for the scheduler it starts)"},
    )
    tls_cert: str = field(
        default="",
        metadata={"help": "PEM certificate file: the coordinator serves gRPC over TLS with it; "
                          "a worker presents it as its client certificate"},
    )
    tls_key: str = field(default="", metadata={"help": "PEM private key file of tls_cert"})
    tls_ca: str = field(
        default="",
        metadata={"help": "PEM CA file: a worker dials the coordinator over TLS and trusts it "
                          "by this CA; a coordinator given it requires client certificates "
                          "signed by it"},
    )
    pool_url: str = field(
        default="", metadata={"help": "control URL of the process supervisor the scheduler drives"}
    )
    enable_pool_api: bool = field(
        default=False, metadata={"help": "let the scheduler's /api/pool endpoints scale and kill"}
    )
    metrics_port: int = field(
        default=9090, metadata={"help": "Prometheus port of the coordinator (0 = off)"}
    )
    log_format: str = field(default="text", metadata={"help": "text or json"})
    log_level: str = field(default="INFO", metadata={"help": "logging level"})

    def __post_init__(self) -> None:
        for name in _AT_LEAST_ONE:
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{_env_name(name)}={value!r} must be at least 1")
        for name in ("prefetch", "max_worker_prefetch", "prefetch_below", "vacuum_dead_rows"):
            if getattr(self, name) < 0:
                raise ValueError(f"{_env_name(name)}={getattr(self, name)!r} must be 0 or more")
        if self.task_retention < 0:
            raise ValueError(f"{_env_name('task_retention')}={self.task_retention!r} must be 0 "
                             "(keep forever) or more")
        if not self.load_max_rate > 0:
            raise ValueError(f"{_env_name('load_max_rate')}={self.load_max_rate!r} must be "
                             "above 0")
        if self.worker_start not in WORKER_STARTS:
            raise ValueError(f"{_env_name('worker_start')}={self.worker_start!r} must be one of "
                             f"{', '.join(WORKER_STARTS)}")
        if self.assign_strategy not in ASSIGN_STRATEGIES:
            raise ValueError(f"{_env_name('assign_strategy')}={self.assign_strategy!r} must be one "
                             f"of {', '.join(ASSIGN_STRATEGIES)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from TASKMASTER_* variables, then explicit overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(_env_name(f.name))
            if (raw is None or raw == "") and f.name in SECRETS:
                raw = _read_secret_file(f.name, env.get(_env_name(f.name) + "_FILE"))
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw, type(f.default))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @property
    def heartbeat_timeout(self) -> float:
        """Seconds of silence after which a worker is declared dead."""
        return self.heartbeat_interval * self.heartbeat_misses

    def env(self) -> dict[str, str]:
        """These settings as TASKMASTER_* variables (for child processes)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                value = "1" if value else "0"
            out[_env_name(f.name)] = str(value)
        return out


_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^/\s]*@", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|sslpassword)=)[^&\s]*", re.I)


def redact(text: str) -> str:
    """Text with the password of every URL in it replaced by ***
    (postgresql://app:secret@db/x -> postgresql://app:***@db/x)."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:***@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}***", text)


def _read_secret_file(name: str, path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{_env_name(name)}_FILE={path!r} cannot be read: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None


def _parse(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind is Path:
            return Path(raw)
        return kind(raw)
    except ValueError:
        raise ValueError(f"{_env_name(name)}={raw!r} is not a valid {kind.__name__}") from None


def help_for(name: str) -> str:
    """The --help text of a setting, naming its variable."""
    for f in fields(Settings):
        if f.name == name:
            return f"{f.metadata.get('help', '')} [env {_env_name(name)}, default {f.default}]"
    raise KeyError(name)


def markdown_table() -> str:
    """Every setting as a Markdown table (the README's Configuration section)."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for f in fields(Settings):
        default = f.default if f.default != "" else "(empty)"
        rows.append(f"| `{_env_name(f.name)}` | `{default}` | {f.metadata.get('help', '')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
