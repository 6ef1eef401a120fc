"""Record the demo guide's five parts on a small stack of this machine, into tour.jsonl.

    python notebooks/recordings/record_tour.py [OUT.jsonl]

1 bulk create, 2 concurrency, 3 scaling (3 -> 5 -> 3 workers), 4 a worker killed while it
runs tasks (they are reassigned), 5 the coordinator crashed and restarted. A few hundred
tasks, well under 2 MB; 13_replay.ipynb replays it with no stack.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from taskmaster.lab import connect
from taskmaster.model import EventType

HERE = Path(__file__).resolve().parent


async def part(dash: Any, title: str) -> None:
    """Mark a part in the log and wait for the queue to drain."""
    print(f"{title}: {dash.summary()}", flush=True)


async def main(out: Path) -> int:
    stack = await connect(workers=3, own=True, concurrency=2, heartbeat_interval=0.5)
    client = stack.client
    try:
        dash = await stack.dashboard(poll_interval=0.5)
        dash.record.start(out)

        # 1 bulk create: 120 demo-jobs in one request
        batch = await client.schedule_batch("demo-job", 120)
        await dash.wait_done(batch["ids"], timeout=120)
        await part(dash, "1 bulk create")

        # 2 concurrency: 24 one-second sleeps on 6 slots run side by side
        batch = await client.schedule_batch("sleep", 24, payload={"seconds": 1})
        await dash.wait_done(batch["ids"], timeout=60)
        await part(dash, "2 concurrency")

        # 3 scaling: 5 workers take 80 demo-jobs, then back to 3
        await client.scale(5)
        await stack.wait_workers(5)
        batch = await client.schedule_batch("demo-job", 80)
        await dash.wait_done(batch["ids"], timeout=120)
        await client.scale(3)
        await stack.wait_workers(3)
        await part(dash, "3 scaling")

        # 4 a worker killed while it runs: its tasks go to the others
        mark = dash.events.mark()
        batch = await client.schedule_batch("sleep", 12, payload={"seconds": 3})
        running = await dash.next_event(lambda e: e["event"] == EventType.TASK_RUNNING,
                                        after=mark)
        await asyncio.sleep(1.0)  # a second into its tasks
        await client.kill_worker(dash.worker_name(running["worker_id"]))
        await dash.wait_done(batch["ids"], timeout=120)
        await dash.wait_for(lambda s: s.count(EventType.TASK_REASSIGNED) >= 1, 30)
        await client.scale(3)  # a killed worker stays dead: start another
        await stack.wait_workers(3)
        await part(dash, "4 worker killed")

        # 5 the coordinator crashes under load and comes back; nothing is lost
        batch = await client.schedule_batch("demo-job", 40)
        await dash.next_event(lambda e: e["event"] == EventType.TASK_COMPLETED)
        await client.coordinator("kill", restart=True)  # SIGKILL; the supervisor restarts it
        await dash.wait_done(batch["ids"], timeout=120)
        await stack.wait_idle()
        await dash.refresh()
        await asyncio.sleep(1.5)  # a last poll or two, with the final counts
        await part(dash, "5 coordinator crash")
        saved = dash.record.stop()
        print(f"saved {saved} ({saved.stat().st_size if saved else 0} bytes)")
    finally:
        await stack.close()
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "tour.jsonl"
    sys.exit(asyncio.run(main(target)))
