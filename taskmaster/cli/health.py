"""`taskmaster healthcheck grpc|http`: the probes compose healthchecks use, so images need
no curl or grpc_health_probe."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from taskmaster.config import Settings


def grpc_health(target: str, timeout: float, service: str = "",
                credentials: Any = None) -> tuple[bool, str]:
    """Ask a gRPC server's health service; (serving, status text). TLS with credentials."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = (grpc.secure_channel(target, credentials) if credentials is not None
               else grpc.insecure_channel(target))
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def http_health(url: str, timeout: float) -> tuple[bool, str]:
    """GET a URL; (2xx, status text)."""
    # here, not at the top: every component's start parses this module's commands, and
    # urllib.request costs a tenth of a worker's start
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 when the target is healthy, 1 otherwise (for container healthchecks)."""
    if args.kind == "grpc":
        from taskmaster.worker.runtime import channel_credentials

        # the same TLS settings the workers use to dial the coordinator
        credentials = channel_credentials(Settings.from_env())
        ok, text = grpc_health(args.target, args.timeout, args.service, credentials)
    else:
        ok, text = http_health(args.target, args.timeout)
    print(f"{args.target}: {text}", flush=True)
    return 0 if ok else 1


def add_commands(sub: Any, option: Callable[..., None]) -> None:
    """Add the healthcheck subcommand."""
    p = sub.add_parser("healthcheck", help="exit 0 if a gRPC or HTTP endpoint is healthy")
    p.add_argument("kind", choices=("grpc", "http"), help="grpc: the gRPC health service; "
                   "http: a GET answering 2xx")
    p.add_argument("target", metavar="TARGET", help="HOST:PORT (grpc) or URL (http)")
    p.add_argument("--service", default="", help="gRPC health service name [default: server]")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds [default 3]")
    option(p, "log_level")
    p.set_defaults(func=cmd_healthcheck)
