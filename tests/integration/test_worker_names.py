"""One row per worker name in GET /api/workers, every incarnation behind ?history=true.

A worker restarted under its name (scaled down and up, killed and brought back) registers
with a new id; the list shows its live incarnation, else its latest, names in numeric
order. Real PostgreSQL, the scheduler on a real socket.
"""

from __future__ import annotations

import asyncio

import aiohttp

from taskmaster.store import Store
from tests.helpers import fast_settings, serve_scheduler


async def register(store: Store, worker_id: str, name: str) -> None:
    await store.upsert_worker(worker_id=worker_id, name=name, host="h", pid=1, capacity=1,
                              commands=["noop"])
    await asyncio.sleep(0.002)  # registration times in this order


async def test_each_name_once_its_live_or_latest_incarnation(store: Store,
                                                             database_url: str) -> None:
    await register(store, "a1", "worker-1")
    await register(store, "b1", "worker-2")
    await register(store, "c1", "worker-10")
    await store.workers_offline(["b1"], "killed")
    await register(store, "b2", "worker-2")  # back under its name
    await register(store, "d1", "worker-3")
    await store.workers_offline(["d1"], "scaled down")
    await register(store, "d2", "worker-3")
    await store.workers_offline(["d2"], "scaled down again")  # only offline ones: the latest

    latest = await store.list_workers(history=False)
    assert [(w.name, w.id, w.status.value) for w in latest] == [
        ("worker-1", "a1", "online"), ("worker-2", "b2", "online"),
        ("worker-3", "d2", "offline"), ("worker-10", "c1", "online")]
    every = await store.list_workers(history=True)
    assert sorted(w.id for w in every) == ["a1", "b1", "b2", "c1", "d1", "d2"]
    assert await store.worker_name("b1") == "worker-2" and await store.worker_name("x") is None

    async with serve_scheduler(fast_settings(), database_url) as (url, _app), \
            aiohttp.ClientSession() as http:
        async with http.get(url + "/api/workers") as resp:
            rows = await resp.json()
        assert [w["name"] for w in rows] == ["worker-1", "worker-2", "worker-3", "worker-10"]
        for value in ("true", "1", "yes"):
            async with http.get(url + "/api/workers", params={"history": value}) as resp:
                assert len(await resp.json()) == 6
        async with http.get(url + "/api/workers", params={"history": "false"}) as resp:
            assert len(await resp.json()) == 4
        async with http.get(url + "/api/workers", params={"history": "sometimes"}) as resp:
            assert resp.status == 422
            assert (await resp.json())["field"] == "history"
