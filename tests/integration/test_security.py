"""Tokens on the HTTP API and on the worker's gRPC join, TLS for gRPC, health and reflection.

Every mutating route of the app (found in its router, so a new one is covered the day it
is added) refuses a missing or wrong token with a JSON 401 and changes nothing; the right
token passes. Workers join the coordinator over real gRPC sockets.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from taskmaster.config import Settings
from taskmaster.coordinator.server import SERVICE_NAME
from taskmaster.worker.runtime import Worker
from tests.helpers import fast_settings, serve_coordinator, serve_scheduler, wait_for
from tests.integration.live import table_counts

TOKEN = "write-secret"
READ_TOKEN = "read-secret"
NO_STREAM = "/api/logs/stream"  # reads checked alone: its 200 never ends
PUBLIC = {"/healthz", "/readyz"}


def routes(app: web.Application, method: str) -> list[str]:
    """The app's route templates for one method."""
    return sorted({r.resource.canonical for r in app.router.routes()
                   if r.method == method and r.resource is not None})


def concrete(path: str, task_id: str) -> str:
    """A route template with its path parameters filled in."""
    return (path.replace("{id}", task_id).replace("{name}", "w1")
            .replace("{action}", "restart"))


BODIES: dict[str, Any] = {
    "/api/schedule": {"command": "noop"},
    "/api/schedule/batch": {"command": "noop", "count": 2},
    "/api/pool/scale": {"workers": 1},
    "/api/pool/workers/{name}/kill": {"graceful": True},
}
BAD_AUTH = [None, "", "Bearer", "Bearer ", f"Bearer {TOKEN}x", f"bearer {TOKEN}",
            f"Basic {TOKEN}", f"Bearer {READ_TOKEN}", TOKEN]


async def a_task(http: aiohttp.ClientSession, url: str) -> str:
    async with http.post(url + "/api/schedule", json={"command": "noop", "delay_seconds": 3600},
                         headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        assert resp.status == 201
        return str((await resp.json())["id"])


def auth(header: str | None) -> dict[str, str]:
    return {} if header is None else {"Authorization": header}


# ---- HTTP ----

async def test_every_mutating_route_needs_the_api_token(database_url: str) -> None:
    settings = fast_settings(api_token=TOKEN, enable_pool_api=True)
    async with serve_scheduler(settings, database_url) as (url, app), \
            aiohttp.ClientSession() as http:
        task_id = await a_task(http, url)
        posts = routes(app, "POST")
        assert {"/api/schedule", "/api/schedule/batch", "/api/tasks/{id}/cancel",
                "/api/pool/scale"} <= set(posts)
        before = await table_counts(database_url)
        for path in posts:
            for header in BAD_AUTH:
                async with http.post(url + concrete(path, task_id), json=BODIES.get(path, {}),
                                     headers=auth(header)) as resp:
                    assert resp.status == 401, (path, header, resp.status)
                    assert resp.headers["WWW-Authenticate"] == "Bearer"
                    body = await resp.json()
                    assert body["field"] == "Authorization" and "token" in body["error"]
        assert await table_counts(database_url) == before, "a refused request changed the database"
        for path in posts:
            async with http.post(url + concrete(path, task_id), json=BODIES.get(path, {}),
                                 headers=auth(f"Bearer {TOKEN}")) as resp:
                assert resp.status != 401, path
                assert resp.status < 500 or resp.status == 501, (path, resp.status)
        assert await table_counts(database_url) != before


async def test_reads_are_open_unless_the_read_token_is_set(database_url: str) -> None:
    async with serve_scheduler(fast_settings(api_token=TOKEN), database_url) as (url, app), \
            aiohttp.ClientSession() as http:
        task_id = await a_task(http, url)
        for path in routes(app, "GET"):
            if path in (NO_STREAM, "/api/pool"):
                continue
            async with http.get(url + concrete(path, task_id)) as resp:
                assert resp.status == 200, path
        async with http.get(url + NO_STREAM) as resp:
            assert resp.status == 200


async def test_the_read_token_closes_every_read_but_health(database_url: str) -> None:
    settings = fast_settings(api_token=TOKEN, api_read_token=READ_TOKEN)
    async with serve_scheduler(settings, database_url) as (url, app), \
            aiohttp.ClientSession() as http:
        task_id = await a_task(http, url)
        gets = routes(app, "GET")
        assert {"/metrics", "/api/openapi.json", "/api/tasks", NO_STREAM} <= set(gets)
        for path in gets:
            target = url + concrete(path, task_id)
            if path in PUBLIC:
                async with http.get(target) as resp:
                    assert resp.status == 200, path
                continue
            for header in [None, f"Bearer {READ_TOKEN}x", f"Basic {READ_TOKEN}"]:
                async with http.get(target, headers=auth(header)) as resp:
                    assert resp.status == 401, (path, header)
                    assert (await resp.json())["field"] == "Authorization"
            for good in (READ_TOKEN, TOKEN):  # the API token reads too
                async with http.get(target, headers=auth(f"Bearer {good}")) as resp:
                    assert resp.status in (200, 403), (path, good)  # 403: pool API off
        # the read token does not write
        async with http.post(url + "/api/schedule", json={"command": "noop"},
                             headers=auth(f"Bearer {READ_TOKEN}")) as resp:
            assert resp.status == 401


async def test_a_read_token_alone_closes_the_writes_too(database_url: str) -> None:
    """No stack whose reads need a token leaves its mutations open: with only the read
    token set, every POST needs it."""
    settings = fast_settings(api_read_token=READ_TOKEN, enable_pool_api=True)
    async with serve_scheduler(settings, database_url) as (url, app), \
            aiohttp.ClientSession() as http:
        before = await table_counts(database_url)
        posts = routes(app, "POST")
        assert {"/api/schedule", "/api/schedule/batch", "/api/tasks/{id}/cancel"} <= set(posts)
        task_id = "00000000-0000-0000-0000-000000000000"
        for path in posts:
            for header in [None, f"Bearer {READ_TOKEN}x", f"Bearer {TOKEN}"]:
                async with http.post(url + concrete(path, task_id), json=BODIES.get(path, {}),
                                     headers=auth(header)) as resp:
                    assert resp.status == 401, (path, header)
                    assert (await resp.json())["field"] == "Authorization"
        assert await table_counts(database_url) == before
        async with http.post(url + "/api/schedule", json={"command": "noop"},
                             headers=auth(f"Bearer {READ_TOKEN}")) as resp:
            assert resp.status == 201
        async with http.get(url + "/healthz") as resp:
            assert resp.status == 200


async def test_readyz_says_database_unavailable_and_logs_the_reason(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = database_url.rsplit("/", 1)[1]
    async with serve_scheduler(fast_settings(), database_url) as (url, _app), \
            aiohttp.ClientSession() as http:
        admin = await asyncpg.connect(database_url.rsplit("/", 1)[0] + "/postgres")
        try:
            # no new connection, and the open ones cut: the pool must reconnect, and cannot
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
            with caplog.at_level(logging.WARNING, "taskmaster.scheduler"):
                async def unready() -> Any:
                    async with http.get(url + "/readyz") as resp:
                        return await resp.json() if resp.status == 503 else None

                body = await wait_for(unready, 15, message="/readyz to say 503")
            assert body == {"status": "unavailable", "database": "unavailable"}
            said = [r.getMessage() for r in caplog.records if "not ready" in r.getMessage()]
            assert said and all("database unavailable:" in m for m in said)
            assert any("connections" in m or "terminat" in m for m in said), said
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()


def test_services_bind_to_localhost_by_default() -> None:
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.coordinator.startswith("127.0.0.1:")
    assert not settings.api_token and not settings.cluster_token  # off unless configured


# ---- the worker's join ----

async def test_a_worker_with_a_wrong_or_no_cluster_token_is_refused(
        database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    settings = fast_settings(cluster_token="cluster-secret")
    async with serve_coordinator(settings, database_url) as server:
        target = f"127.0.0.1:{server.port}"
        for token in ("wrong", ""):
            worker = Worker(settings.with_(cluster_token=token), name=f"intruder-{token or 'none'}",
                            coordinator=target)
            code = await asyncio.wait_for(worker.run(), 30)
            assert code == 2
            assert not worker.connected.is_set()
        assert server.coordinator.sessions == {}
        assert server.coordinator.counters["joins_refused"] == 2
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        assert any(r.name == "taskmaster.coordinator.server" and r.levelno == logging.WARNING
                   for r in refused)
        assert any(r.name == "taskmaster.worker.runtime" and "TASKMASTER_CLUSTER_TOKEN"
                   in r.getMessage() for r in refused)
        good = Worker(settings, name="member", coordinator=target)
        run = asyncio.create_task(good.run())
        await wait_for(good.connected.is_set, 15, message="the worker with the token to join")
        assert [s.name for s in server.coordinator.sessions.values()] == ["member"]
        good.drain()
        assert await asyncio.wait_for(run, 30) == 0


async def test_the_worker_command_exits_2_with_a_clear_message(database_url: str) -> None:
    settings = fast_settings(cluster_token="cluster-secret")
    async with serve_coordinator(settings, database_url) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMASTER_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "taskmaster", "worker", "--coordinator",
            f"127.0.0.1:{server.port}", "--cluster-token", "wrong",
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, err.decode()
    assert "refused this worker" in err.decode()
    assert "TASKMASTER_CLUSTER_TOKEN" in err.decode()


# ---- TLS ----

def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "taskmaster-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def health_status(channel: grpc.aio.Channel, service: str = "") -> Any:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return reply.status


async def test_grpc_over_tls_from_certificate_paths(database_url: str, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = fast_settings(tls_cert=str(cert), tls_key=str(key))
    async with serve_coordinator(settings, database_url) as server:
        target = f"127.0.0.1:{server.port}"
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(target, creds) as channel:
            assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(target) as channel:  # plain text is not served
            with pytest.raises(grpc.aio.AioRpcError):
                await health_status(channel)
        # a worker that trusts the CA (here the certificate itself) joins over TLS
        worker = Worker(fast_settings(tls_ca=str(cert)), name="tls-worker", coordinator=target)
        run = asyncio.create_task(worker.run())
        await wait_for(worker.connected.is_set, 15, message="the TLS worker to join")
        worker.drain()
        assert await asyncio.wait_for(run, 30) == 0


async def test_with_a_ca_the_coordinator_requires_client_certificates(
        database_url: str, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = fast_settings(tls_cert=str(cert), tls_key=str(key), tls_ca=str(cert))
    async with serve_coordinator(settings, database_url) as server:
        target = f"127.0.0.1:{server.port}"
        anonymous = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(target, anonymous) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_status(channel)
        # the stack's shared settings: the worker presents the certificate and joins
        worker = Worker(settings, name="mtls-worker", coordinator=target)
        run = asyncio.create_task(worker.run())
        await wait_for(worker.connected.is_set, 15, message="the mTLS worker to join")
        worker.drain()
        assert await asyncio.wait_for(run, 30) == 0


# ---- health and reflection ----

async def test_grpc_health_serving_and_reflection(database_url: str) -> None:
    async with serve_coordinator(fast_settings(), database_url) as server, \
            grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await health_status(channel, SERVICE_NAME) == \
            health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health_status(channel, "no.such.Service")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in stub.ServerReflectionInfo(iter([request]))]
        names = {s.name for s in replies[0].list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


async def test_a_token_of_raw_bytes_is_wrong_not_a_crash(database_url: str) -> None:
    async with serve_scheduler(fast_settings(api_token=TOKEN), database_url) as (url, _app):
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        body = b'{"command": "noop"}'
        writer.write(b"POST /api/schedule HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     b"Authorization: Bearer \xff\xfe" + TOKEN.encode() + b"\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401 ")
