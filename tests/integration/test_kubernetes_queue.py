"""The autoscaler's queue query of deploy/kubernetes/autoscaling/keda.yaml, run as KEDA
would: on a migrated database, as the read-only role its README creates."""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import yaml

from taskmaster.store import NewTask, Store

KEDA = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "autoscaling" / "keda.yaml"


def scaler_query() -> str:
    """The query of the ScaledObject's postgresql trigger."""
    [scaled] = [d for d in yaml.safe_load_all(KEDA.read_text()) if d["kind"] == "ScaledObject"]
    [trigger] = scaled["spec"]["triggers"]
    return str(trigger["metadata"]["query"])


def as_user(url: str, user: str) -> str:
    """The same database URL, logging in as another role."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.hostname}:{parts.port}"))


async def test_the_queue_query_counts_held_and_due_tasks_as_a_read_only_role(
        database_url: str, store: Store) -> None:
    due = await store.create_batch(NewTask(command="noop"), 5)
    await store.create_batch(NewTask(command="noop", delay_seconds=3600), 3)  # not due yet
    await store.upsert_worker(worker_id="w", name="w", host="h", pid=1, capacity=2,
                              commands=["noop"])
    taken = await store.assign(["w", "w"])  # held: not in the queue
    assert len(taken) == 2 and len(due) == 5

    role = f"tm_queue_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await admin.execute(f"GRANT SELECT (status, scheduled_at) ON tasks TO {role}")
        reader = await asyncpg.connect(as_user(database_url, role))
        try:
            # 2 held + 3 due pending / 2 waiting allowed per slot; the delayed ones wait
            assert float(await reader.fetchval(scaler_query())) == 3.5
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.fetchval("SELECT payload FROM tasks LIMIT 1")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.execute("UPDATE tasks SET status = 'cancelled'")
        finally:
            await reader.close()
    finally:
        await admin.execute(f"REVOKE ALL ON tasks FROM {role}")
        await admin.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
