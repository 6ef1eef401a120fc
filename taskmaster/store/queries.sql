-- Named queries, loaded once by taskmaster.store.queries. Each state transition is one
-- statement: the task rows, their events and the worker counters change together. A new
-- task's task_scheduled event is written by the tasks insert trigger (schema.sql).

-- name: insert_task
-- One task. An idempotency key already used returns no row (the caller fetches it).
INSERT INTO tasks (id, command, payload, priority, scheduled_at, max_attempts,
                   timeout_seconds, idempotency_key)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6, $7, $8)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *;

-- name: insert_tasks
-- Tasks without idempotency keys, from concurrent single creates, in one statement.
-- $1 ids, $2 commands, $3 payloads (JSON text), $4 priorities, $5 delays (seconds),
-- $6 max_attempts, $7 timeouts
INSERT INTO tasks (id, command, payload, priority, scheduled_at, max_attempts,
                   timeout_seconds)
SELECT n.id, n.command, n.payload::jsonb, n.priority,
       now() + make_interval(secs => n.delay), n.max_attempts, n.timeout
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::float8[], $6::int[],
            $7::float8[]) AS n(id, command, payload, priority, delay, max_attempts, timeout)
RETURNING *;

-- name: insert_batch
-- $1 command, $2 payload, $3 count, $4 delay seconds, $5 priority, $6 max_attempts, $7 timeout
INSERT INTO tasks (id, command, payload, priority, scheduled_at, max_attempts, timeout_seconds)
SELECT gen_random_uuid(), $1, $2, $5, now() + make_interval(secs => $4), $6, $7
FROM generate_series(1, $3)
RETURNING id, created_at;

-- name: get_task
SELECT * FROM tasks WHERE id = $1;

-- name: get_task_by_key
SELECT * FROM tasks WHERE idempotency_key = $1;

-- name: list_tasks
-- $1 status or NULL, $2 cursor created_at or NULL, $3 cursor id, $4 limit
SELECT * FROM tasks
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $4;

-- name: list_workers
-- Live workers, and those gone offline within $1 seconds, with their count deltas not
-- folded into their rows yet (one scan of worker_counts each; NULL when none).
SELECT w.*, d.completed_delta, d.failed_delta,
       ARRAY(SELECT t.id FROM tasks t
             WHERE t.worker_id = w.id AND t.status IN ('assigned', 'running')
             ORDER BY t.status DESC, t.assigned_at) AS current_task_ids,
       (SELECT c.name FROM coordinators c
        WHERE c.id = w.coordinator_id AND w.status <> 'offline') AS coordinator
FROM workers w, LATERAL (SELECT sum(c.completed)::bigint AS completed_delta,
                                sum(c.failed)::bigint AS failed_delta
                         FROM worker_counts c WHERE c.worker_id = w.id) d
WHERE w.status <> 'offline' OR w.offline_at > now() - make_interval(secs => $1)
ORDER BY w.registered_at, w.id;

-- name: list_worker_names
-- One row per worker name, among the workers live or gone offline within $1 seconds: its
-- live incarnation, else its latest one (a worker restarted under its name registers with
-- a new id). By name, numbers in names in numeric order (worker-2 before worker-10).
SELECT * FROM (
    SELECT DISTINCT ON (w.name) w.*, d.completed_delta, d.failed_delta,
           ARRAY(SELECT t.id FROM tasks t
                 WHERE t.worker_id = w.id AND t.status IN ('assigned', 'running')
                 ORDER BY t.status DESC, t.assigned_at) AS current_task_ids,
           (SELECT c.name FROM coordinators c
            WHERE c.id = w.coordinator_id AND w.status <> 'offline') AS coordinator
    FROM workers w, LATERAL (SELECT sum(c.completed)::bigint AS completed_delta,
                                    sum(c.failed)::bigint AS failed_delta
                             FROM worker_counts c WHERE c.worker_id = w.id) d
    WHERE w.status <> 'offline' OR w.offline_at > now() - make_interval(secs => $1)
    ORDER BY w.name, (w.status <> 'offline') DESC, w.registered_at DESC, w.id
) latest
ORDER BY substring(name FROM '^(.*?)[0-9]*$'),
         substring(name FROM '([0-9]+)$')::numeric NULLS FIRST, name;

-- name: worker_name_of
-- The name of the worker with this id (NULL when unknown).
SELECT name FROM workers WHERE id = $1;

-- name: known_commands
SELECT name FROM commands ORDER BY name;

-- name: stats
-- $1 throughput window in seconds, $2 how many recent starts the wait figures cover
WITH counts AS (
    SELECT status, sum(delta)::bigint AS n FROM task_counts GROUP BY status
), waits AS (
    SELECT extract(epoch FROM started_at - scheduled_at) AS wait
    FROM tasks WHERE started_at IS NOT NULL
    ORDER BY started_at DESC LIMIT $2
)
SELECT
    coalesce((SELECT jsonb_object_agg(status, n) FROM counts), '{}'::jsonb) AS counts,
    coalesce((SELECT sum(delta) FROM task_counts
              WHERE status = 'completed' AND delta > 0
                AND at > now() - make_interval(secs => $1)), 0)::bigint AS recent_completed,
    (SELECT count(*) FROM workers WHERE status = 'online') AS workers_online,
    (SELECT count(*) FROM workers WHERE status = 'draining') AS workers_draining,
    (SELECT avg(wait) FROM waits) AS wait_mean,
    (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY wait) FROM waits) AS wait_p95;

-- name: fold_worker_counts
-- Fold the workers' count deltas into their rows (deltas of a worker row gone are
-- dropped); the rows locked in id order, as every statement that locks several does.
WITH old AS (
    DELETE FROM worker_counts RETURNING worker_id, completed, failed
), sums AS (
    SELECT worker_id, sum(completed) AS completed, sum(failed) AS failed
    FROM old GROUP BY worker_id
), locked AS (
    SELECT w.id FROM workers w WHERE w.id IN (SELECT worker_id FROM sums)
    ORDER BY w.id FOR NO KEY UPDATE
)
UPDATE workers w SET tasks_completed = w.tasks_completed + s.completed,
                     tasks_failed = w.tasks_failed + s.failed
FROM sums s WHERE w.id = s.worker_id AND w.id IN (SELECT id FROM locked);

-- name: dead_tables
-- Of the tables named in $1, those holding at least $2 dead rows and a tenth of their live
-- ones (PostgreSQL's own counts, as autovacuum reads them).
SELECT relname FROM pg_stat_user_tables
WHERE schemaname = current_schema() AND relname = ANY($1::text[])
  AND n_dead_tup >= greatest($2::bigint, n_live_tup / 10)
ORDER BY n_dead_tup DESC;

-- name: compact_counts
-- Fold count deltas older than $1 seconds into one row per status.
WITH old AS (
    DELETE FROM task_counts WHERE at < now() - make_interval(secs => $1)
    RETURNING status, delta
)
INSERT INTO task_counts (at, status, delta)
SELECT '-infinity', status, sum(delta) FROM old GROUP BY status HAVING sum(delta) <> 0;

-- name: cancel_task
-- Pending: cancelled at once. Assigned or running: flagged, the worker is told.
WITH cur AS (
    SELECT id, status FROM tasks WHERE id = $1 FOR UPDATE
), upd AS (
    UPDATE tasks t SET
        status = CASE WHEN cur.status = 'pending' THEN 'cancelled' ELSE t.status END,
        cancelled_at = CASE WHEN cur.status = 'pending' THEN clock_timestamp() END,
        cancel_requested = true
    FROM cur
    WHERE t.id = cur.id AND cur.status IN ('pending', 'assigned', 'running')
    RETURNING t.*
), ev AS (
    INSERT INTO events (event, task_id, worker_id, data)
    SELECT CASE WHEN status = 'cancelled' THEN 'task_cancelled' ELSE 'task_cancel_requested' END,
           id, worker_id, jsonb_build_object('attempt', attempt)
    FROM upd
), note AS (
    SELECT pg_notify('taskmaster_cancel', id::text || ':' || attempt || ':' || worker_id)
    FROM upd WHERE status <> 'cancelled'
)
SELECT upd.*, (SELECT count(*) FROM note) AS notified FROM upd;

-- name: events_after
SELECT * FROM events WHERE id > $1 ORDER BY id LIMIT $2;

-- name: feed_after
-- What the SSE feed sends: data stays JSON text, spliced into the message undecoded.
SELECT id, event, ts, task_id::text AS task_id, worker_id, data::text AS data
FROM events WHERE id > $1 ORDER BY id LIMIT $2;

-- name: pool_scaled
-- The autoscaler resized the worker pool: $1 the decision (from, to, reason) as JSON text.
INSERT INTO events (event, data) VALUES ('pool_scaled', $1::text::jsonb) RETURNING id;

-- name: event_ids_after
SELECT id FROM events WHERE id > $1 ORDER BY id LIMIT $2;

-- name: event_horizon
-- The newest event id, and the transactions still running when it was read: an id is
-- taken at insert but shows at commit, so those may yet commit lower ids.
SELECT coalesce(max(id), 0) AS id,
       ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot()))::text[] AS running
FROM events;

-- name: still_running
-- How many of these transactions ($1, xid8 as text) have not ended yet.
SELECT count(*) AS n FROM unnest($1::text[]) AS x
WHERE pg_xact_status(x::xid8) = 'in progress';

-- name: prune_events
DELETE FROM events WHERE ts < now() - make_interval(secs => $1);

-- name: prune_tasks
-- At most $2 finished tasks that ended more than $1 seconds ago (never a pending or held
-- one). Found through tasks_status_created_idx: a task ends after it is created.
WITH old AS (
    SELECT id FROM tasks
    WHERE status IN ('completed', 'failed', 'cancelled')
      AND created_at < now() - make_interval(secs => $1)
      AND coalesce(completed_at, failed_at, cancelled_at, created_at)
          < now() - make_interval(secs => $1)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM tasks t USING old WHERE t.id = old.id;

-- name: prune_workers
-- Workers offline for more than $1 seconds that hold no task (their ids stay in the
-- history of the tasks they ran), then the commands no remaining worker offers that were
-- first seen that long ago, except the built-ins schema.sql inserts (the scheduler accepts
-- them before any worker comes); how many workers went.
WITH gone AS (
    DELETE FROM workers w
    WHERE w.status = 'offline' AND w.offline_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM tasks t
                      WHERE t.worker_id = w.id AND t.status IN ('assigned', 'running'))
    RETURNING id
), offered AS (
    SELECT DISTINCT unnest(commands) AS name FROM workers
    WHERE id NOT IN (SELECT id FROM gone)
), forgotten AS (
    DELETE FROM commands c
    WHERE c.first_seen < now() - make_interval(secs => $1)
      AND c.name <> ALL ('{demo-job,noop,sleep,fail,flaky,cpu}'::text[])
      AND c.name NOT IN (SELECT name FROM offered)
)
SELECT count(*) FROM gone;

-- name: upsert_worker
-- A worker under an id of the caller's choosing, with no secret (tests, the lab's recorded
-- runs): the coordinator admits only workers it issued an id and a secret to.
-- $1 id, $2 name, $3 host, $4 pid, $5 capacity, $6 commands
WITH w AS (
    INSERT INTO workers (id, name, host, pid, capacity, commands, status, registered_at,
                         last_heartbeat, offline_at)
    VALUES ($1, $2, $3, $4, $5, $6, 'online', now(), now(), NULL)
    ON CONFLICT (id) DO UPDATE SET
        name = EXCLUDED.name, host = EXCLUDED.host, pid = EXCLUDED.pid,
        capacity = EXCLUDED.capacity, commands = EXCLUDED.commands, status = 'online',
        last_heartbeat = now(), offline_at = NULL
    RETURNING *
), cmds AS (
    INSERT INTO commands (name) SELECT unnest($6::text[]) ON CONFLICT DO NOTHING
), ev AS (
    INSERT INTO events (event, worker_id, data)
    SELECT 'worker_online', id, jsonb_build_object('name', name, 'host', host, 'capacity', capacity)
    FROM w
)
SELECT * FROM w;

-- name: insert_worker
-- A new worker, under the id and the secret's hash the coordinator has just issued.
-- $1 id, $2 secret hash, $3 name, $4 host, $5 pid, $6 capacity, $7 commands,
-- $8 the coordinator holding it ('' for none), $9 its lease in seconds
WITH w AS (
    INSERT INTO workers (id, secret_hash, name, host, pid, capacity, commands, status,
                         registered_at, last_heartbeat, offline_at, coordinator_id,
                         lease_expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 'online', now(), now(), NULL, nullif($8::text, ''),
            now() + make_interval(secs => $9::float8))
    ON CONFLICT (id) DO NOTHING
    RETURNING *
), cmds AS (
    INSERT INTO commands (name) SELECT unnest(commands) FROM w ON CONFLICT DO NOTHING
), ev AS (
    INSERT INTO events (event, worker_id, data)
    SELECT 'worker_online', id, jsonb_build_object('name', name, 'host', host, 'capacity', capacity)
    FROM w
)
SELECT id FROM w;

-- name: rejoin_worker
-- A worker back with its id and secret (after a break, or to a restarted coordinator, or
-- to another coordinator of the pool, which takes over its lease): nothing changes, and no
-- row comes back, unless the secret's hash is the one on record.
-- $1 id, $2 secret hash, $3 name, $4 host, $5 pid, $6 capacity, $7 commands,
-- $8 the coordinator holding it now ('' for none), $9 its lease in seconds
WITH w AS (
    UPDATE workers SET
        name = $3, host = $4, pid = $5, capacity = $6, commands = $7, status = 'online',
        last_heartbeat = now(), offline_at = NULL, coordinator_id = nullif($8::text, ''),
        lease_expires_at = now() + make_interval(secs => $9::float8)
    WHERE id = $1 AND secret_hash = $2
    RETURNING *
), cmds AS (
    INSERT INTO commands (name) SELECT unnest(commands) FROM w ON CONFLICT DO NOTHING
), ev AS (
    INSERT INTO events (event, worker_id, data)
    SELECT 'worker_online', id, jsonb_build_object('name', name, 'host', host, 'capacity', capacity)
    FROM w
)
SELECT id FROM w;

-- name: worker_held_tasks
-- The tasks PostgreSQL says a worker holds.
SELECT id, attempt, status FROM tasks
WHERE worker_id = $1 AND status IN ('assigned', 'running');

-- name: heartbeat_workers
-- Renew the leases of the workers a coordinator holds, in one statement. $1 worker ids,
-- $2 statuses (online or draining), $3 the coordinator renewing (NULL: any), $4 the lease
-- in seconds. Only a lease this coordinator still holds is renewed: the ids that come back;
-- a worker missing from them was taken over by another coordinator, or declared gone.
WITH hb AS (
    SELECT * FROM unnest($1::text[], $2::text[]) AS h(id, status)
), upd AS (
    UPDATE workers w SET last_heartbeat = now(), status = hb.status,
                         lease_expires_at = now() + make_interval(secs => $4::float8)
    FROM hb WHERE w.id = hb.id AND w.status <> 'offline'
              AND ($3::text IS NULL OR w.coordinator_id = $3)
    RETURNING w.id, w.name, w.status,
              (SELECT status FROM workers o WHERE o.id = w.id) AS old_status
), ev AS (
    INSERT INTO events (event, worker_id, data)
    SELECT 'worker_draining', id, jsonb_build_object('name', name)
    FROM upd WHERE status = 'draining' AND old_status = 'online'
)
SELECT id FROM upd;

-- name: renew_coordinator
-- A coordinator's own lease: $1 id, $2 name, $3 address, $4 lease in seconds.
INSERT INTO coordinators (id, name, address, lease_expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4::float8))
ON CONFLICT (id) DO UPDATE SET lease_expires_at = EXCLUDED.lease_expires_at;

-- name: drop_coordinator
-- A coordinator stopping (its workers' leases lapse, or they move first), and rows of
-- coordinators whose lease lapsed more than $2 seconds ago.
DELETE FROM coordinators
WHERE id = $1 OR lease_expires_at < now() - make_interval(secs => $2::float8);

-- name: list_coordinators
-- Coordinators whose lease is current, with how many workers each holds.
SELECT c.id, c.name, c.address, c.started_at, c.lease_expires_at,
       (SELECT count(*) FROM workers w
        WHERE w.coordinator_id = c.id AND w.status <> 'offline') AS workers
FROM coordinators c
WHERE c.lease_expires_at > now()
ORDER BY c.name, c.started_at;

-- name: worker_offline
-- Workers gone: mark them offline and put their tasks back (attempt + 1), or fail
-- the tasks that have used up their attempts, or finish the cancellation of those whose
-- cancel was requested. $2 is the reason recorded.
-- $3 fences it: NULL, any of them; else only workers this coordinator ($3) holds, or whose
-- lease lapsed (checked again on the locked row: a worker that has just moved to another
-- coordinator keeps its tasks), and tasks held by workers already offline or unknown.
-- Lock order, as in apply_updates: task rows (by id) before worker rows, or the two deadlock.
WITH held AS (
    SELECT id, worker_id FROM tasks
    WHERE worker_id = ANY($1::text[]) AND status IN ('assigned', 'running')
    ORDER BY id
    FOR UPDATE
), gone AS (
    UPDATE workers SET status = 'offline', offline_at = now(), lease_expires_at = NULL
    WHERE id = ANY($1::text[]) AND status <> 'offline'
      AND ($3::text IS NULL OR coordinator_id IS NULL OR coordinator_id = $3
           OR lease_expires_at IS NULL OR lease_expires_at < now())
      AND (SELECT count(*) FROM held) >= 0  -- takes the task locks first
    RETURNING id, name
), upd AS (
    UPDATE tasks t SET
        status = CASE WHEN t.cancel_requested THEN 'cancelled'
                      WHEN t.attempt < t.max_attempts THEN 'pending' ELSE 'failed' END,
        attempt = CASE WHEN NOT t.cancel_requested AND t.attempt < t.max_attempts
                       THEN t.attempt + 1 ELSE t.attempt END,
        failed_at = CASE WHEN NOT t.cancel_requested AND t.attempt >= t.max_attempts
                         THEN clock_timestamp() END,
        cancelled_at = CASE WHEN t.cancel_requested THEN clock_timestamp() END,
        error = $2,
        history = t.history || jsonb_build_object(
            'attempt', t.attempt, 'worker_id', t.worker_id, 'error', $2::text,
            'assigned_at', t.assigned_at, 'started_at', t.started_at, 'at', clock_timestamp()),
        worker_id = NULL, assigned_at = NULL, started_at = NULL, progress = 0,
        scheduled_at = CASE WHEN NOT t.cancel_requested AND t.attempt < t.max_attempts
                            THEN now() ELSE t.scheduled_at END
    FROM held WHERE t.id = held.id
      AND (held.worker_id IN (SELECT id FROM gone)
           OR NOT EXISTS (SELECT 1 FROM workers w
                          WHERE w.id = held.worker_id AND w.status <> 'offline'))
    RETURNING t.id, t.status, t.attempt, t.history -> -1 ->> 'worker_id' AS old_worker,
              t.command
), ev AS (
    INSERT INTO events (event, task_id, worker_id, data)
    SELECT CASE WHEN status = 'pending' THEN 'task_reassigned'
                WHEN status = 'cancelled' THEN 'task_cancelled' ELSE 'task_failed' END,
           id, old_worker, jsonb_build_object('attempt', attempt, 'reason', $2::text)
    FROM upd
    UNION ALL
    SELECT 'worker_offline', NULL::uuid, id, jsonb_build_object('name', name, 'reason', $2::text)
    FROM gone
)
SELECT (SELECT count(*) FROM gone) AS workers, (SELECT count(*) FROM upd) AS tasks,
       -- [[command, new status, tasks], ...] for the coordinator's metrics
       (SELECT coalesce(jsonb_agg(jsonb_build_array(command, status, n)), '[]'::jsonb)
        FROM (SELECT command, status, count(*) AS n FROM upd GROUP BY command, status) m) AS moved;

-- name: requeue_tasks
-- Put specific deliveries back (a worker no longer has them). $1 ids, $2 attempts, $3 reason.
WITH held AS (
    SELECT t.id FROM tasks t
    JOIN unnest($1::uuid[], $2::int[]) AS r(id, attempt) ON t.id = r.id AND t.attempt = r.attempt
    WHERE t.status IN ('assigned', 'running')
    ORDER BY t.id
    FOR UPDATE OF t
), upd AS (
    UPDATE tasks t SET
        status = CASE WHEN t.cancel_requested THEN 'cancelled'
                      WHEN t.attempt < t.max_attempts THEN 'pending' ELSE 'failed' END,
        attempt = CASE WHEN NOT t.cancel_requested AND t.attempt < t.max_attempts
                       THEN t.attempt + 1 ELSE t.attempt END,
        failed_at = CASE WHEN NOT t.cancel_requested AND t.attempt >= t.max_attempts
                         THEN clock_timestamp() END,
        cancelled_at = CASE WHEN t.cancel_requested THEN clock_timestamp() END,
        error = $3,
        history = t.history || jsonb_build_object(
            'attempt', t.attempt, 'worker_id', t.worker_id, 'error', $3::text,
            'assigned_at', t.assigned_at, 'started_at', t.started_at, 'at', clock_timestamp()),
        worker_id = NULL, assigned_at = NULL, started_at = NULL, progress = 0,
        scheduled_at = CASE WHEN t.cancel_requested THEN t.scheduled_at ELSE now() END
    FROM held WHERE t.id = held.id
    RETURNING t.id, t.status, t.attempt, t.history -> -1 ->> 'worker_id' AS old_worker,
              t.command
), ev AS (
    INSERT INTO events (event, task_id, worker_id, data)
    SELECT CASE WHEN status = 'pending' THEN 'task_reassigned'
                WHEN status = 'cancelled' THEN 'task_cancelled' ELSE 'task_failed' END,
           id, old_worker, jsonb_build_object('attempt', attempt, 'reason', $3::text)
    FROM upd
)
SELECT status, command FROM upd;

-- name: stale_workers
-- Workers PostgreSQL thinks alive whose lease lapsed (without one: silent for $1 seconds),
-- not connected here ($2), and not held by another live coordinator: held by none, by
-- this one ($3), or by one whose own lease lapsed too.
SELECT w.id FROM workers w
WHERE w.status <> 'offline'
  AND coalesce(w.lease_expires_at, w.last_heartbeat + make_interval(secs => $1)) < now()
  AND w.id <> ALL($2::text[])
  AND (w.coordinator_id IS NULL OR w.coordinator_id = $3
       OR NOT EXISTS (SELECT 1 FROM coordinators c
                      WHERE c.id = w.coordinator_id AND c.lease_expires_at > now()));

-- name: orphaned_tasks
-- Held tasks whose worker is offline or unknown (a crash between two statements).
SELECT DISTINCT t.worker_id FROM tasks t
LEFT JOIN workers w ON w.id = t.worker_id
WHERE t.status IN ('assigned', 'running') AND (w.id IS NULL OR w.status = 'offline');

-- name: assign_tasks
-- Claim one due pending task per slot; $1 lists worker ids in round-robin slot order. $2,
-- the claiming coordinator, keeps only the slots of workers it still holds (NULL: all): the
-- worker rows are locked, so a worker moving to another coordinator meanwhile either moves
-- after this commits (and its new coordinator finds the delivery) or gets nothing here.
-- The slots after the first $3 are prefetch (queued behind busy slots on the worker): they
-- take tasks only while every task picked is of a command in $4 (those that ran short).
-- $5 is the number of slots: a LIMIT the planner can see (one it cannot, it takes for a
-- tenth of the queue, and joins the update to a scan of the whole table).
WITH mine AS (
    SELECT w.id FROM workers w
    WHERE $2::text IS NOT NULL AND w.id = ANY($1::text[]) AND w.coordinator_id = $2
      AND w.status <> 'offline'
    FOR SHARE
), slots AS (
    SELECT worker_id, s.slot > $3::int AS queued, row_number() OVER (ORDER BY s.slot) AS slot
    FROM unnest($1::text[]) WITH ORDINALITY AS s(worker_id, slot)
    WHERE $2::text IS NULL OR s.worker_id IN (SELECT id FROM mine)
), picked AS (
    SELECT id, priority, scheduled_at, command FROM tasks
    WHERE status = 'pending' AND scheduled_at <= now()
    ORDER BY priority DESC, scheduled_at, id
    LIMIT $5::int
    FOR UPDATE SKIP LOCKED
), numbered AS (
    SELECT id, row_number() OVER (ORDER BY priority DESC, scheduled_at, id) AS slot FROM picked
), assigned AS (
    UPDATE tasks t SET status = 'assigned', worker_id = s.worker_id,
                       assigned_at = clock_timestamp(), progress = 0, error = NULL
    FROM numbered n JOIN slots s USING (slot)
    WHERE t.id = n.id
      AND (NOT s.queued
           OR NOT EXISTS (SELECT 1 FROM picked p WHERE p.command <> ALL($4::text[])))
    RETURNING t.id, t.attempt, t.command, t.payload, t.timeout_seconds, t.worker_id,
              t.assigned_at, n.slot
), ev AS (
    INSERT INTO events (ts, event, task_id, worker_id, data)
    SELECT assigned_at, 'task_assigned', id, worker_id,
           jsonb_build_object('attempt', attempt, 'command', command)
    FROM assigned
)
SELECT id, attempt, command, payload::text AS payload, timeout_seconds, worker_id
FROM assigned ORDER BY slot;

-- name: next_due
-- When the earliest task due after $1 becomes due (NULL when none waits). $1 is when the
-- last claim began: a task that fell due while that claim ran comes back here (a time
-- already past, so the assigner looks at once) rather than waiting for the next poll.
SELECT min(scheduled_at) AS at FROM tasks WHERE status = 'pending' AND scheduled_at > $1;

-- name: apply_updates
-- Status reports, fenced: a report counts only if its task is still held by the reporting
-- worker at the reported attempt. Parallel arrays: $1 worker ids, $2 task ids, $3 attempts,
-- $4 states (running|progress|completed|failed|cancelled|rejected), $5 progress, $6 results
-- (json text), $7 errors, $8 started_at, $9 finished_at; $10 retry base s, $11 retry cap s.
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::int[], $4::text[], $5::int[], $6::text[],
                         $7::text[], $8::timestamptz[], $9::timestamptz[])
        AS u(worker_id, id, attempt, state, progress, result, error, started_at, finished_at)
), cur AS (
    SELECT t.id, t.attempt, t.worker_id, t.status AS old_status, t.max_attempts,
           t.cancel_requested, t.scheduled_at AS due_at
    FROM tasks t JOIN u ON t.id = u.id AND t.attempt = u.attempt AND t.worker_id = u.worker_id
    WHERE t.status IN ('assigned', 'running')
    -- task rows in id order, then (counted) worker rows: the order worker_offline keeps
    ORDER BY t.id
    FOR UPDATE OF t
), next AS (
    SELECT u.*, cur.old_status, cur.due_at,
        CASE
            WHEN u.state IN ('running', 'progress') THEN 'running'
            WHEN u.state = 'completed' THEN 'completed'
            WHEN u.state = 'cancelled' THEN 'cancelled'
            WHEN u.state IN ('failed', 'rejected') AND cur.cancel_requested THEN 'cancelled'
            WHEN u.state = 'rejected' THEN 'pending'
            WHEN u.state = 'failed' AND u.attempt < cur.max_attempts THEN 'pending'
            ELSE 'failed'
        END AS new_status
    -- the whole delivery key: a stale report on the same task must not join the live one
    FROM u JOIN cur USING (id, attempt, worker_id)
), upd AS (
    UPDATE tasks t SET
        status = n.new_status,
        started_at = CASE WHEN n.new_status = 'pending' THEN NULL
                          ELSE coalesce(t.started_at, n.started_at, n.finished_at) END,
        progress = CASE WHEN n.new_status = 'completed' THEN 100
                        WHEN n.new_status = 'pending' THEN 0
                        ELSE greatest(t.progress, n.progress) END,
        completed_at = CASE WHEN n.new_status = 'completed' THEN n.finished_at END,
        failed_at = CASE WHEN n.new_status = 'failed' THEN n.finished_at END,
        cancelled_at = CASE WHEN n.new_status = 'cancelled' THEN n.finished_at END,
        result = CASE WHEN n.new_status = 'completed' THEN n.result::jsonb ELSE t.result END,
        error = CASE WHEN n.state IN ('failed', 'rejected', 'cancelled') THEN n.error
                     ELSE t.error END,
        attempt = CASE WHEN n.new_status = 'pending' THEN t.attempt + 1 ELSE t.attempt END,
        -- a refused delivery does not use up an attempt
        max_attempts = CASE WHEN n.state = 'rejected' THEN t.max_attempts + 1
                            ELSE t.max_attempts END,
        worker_id = CASE WHEN n.new_status = 'pending' THEN NULL ELSE t.worker_id END,
        assigned_at = CASE WHEN n.new_status = 'pending' THEN NULL ELSE t.assigned_at END,
        scheduled_at = CASE
            WHEN n.new_status = 'pending' AND n.state = 'failed' THEN clock_timestamp() +
                make_interval(secs => least($11::float8,
                    $10::float8 * power(2, t.attempt - 1) * (0.5 + random())))
            WHEN n.new_status = 'pending' THEN clock_timestamp()
            ELSE t.scheduled_at END,
        history = CASE WHEN n.new_status IN ('pending', 'failed') THEN t.history ||
            jsonb_build_object('attempt', t.attempt, 'worker_id', t.worker_id, 'error', n.error,
                               'assigned_at', t.assigned_at,
                               'started_at', coalesce(t.started_at, n.started_at),
                               'at', n.finished_at)
            ELSE t.history END
    FROM next n WHERE t.id = n.id
    RETURNING t.id, t.status, t.attempt, t.scheduled_at, t.command, t.progress, n.old_status,
              n.state, n.worker_id, n.attempt AS reported_attempt,
              coalesce(t.started_at, n.started_at) AS started_at,
              n.finished_at, n.error, n.due_at
), counted AS (
    -- deltas, not an update of the worker rows: the claim statement holds those locked
    INSERT INTO worker_counts (worker_id, completed, failed)
    SELECT worker_id, done, failed FROM (
        SELECT worker_id,
               count(*) FILTER (WHERE status = 'completed') AS done,
               count(*) FILTER (WHERE state = 'failed') AS failed
        FROM upd GROUP BY worker_id) c
    WHERE c.done > 0 OR c.failed > 0
), ev AS (
    INSERT INTO events (ts, event, task_id, worker_id, data)
    -- a task that finished before its 'running' report went out still shows it ran
    SELECT coalesce(started_at, finished_at, clock_timestamp()), 'task_running', id, worker_id,
           jsonb_build_object('attempt', reported_attempt)
    FROM upd
    WHERE old_status = 'assigned' AND state IN ('running', 'progress', 'completed', 'failed')
    UNION ALL
    SELECT clock_timestamp(), 'task_progress', id, worker_id,
           jsonb_build_object('attempt', reported_attempt, 'progress', progress)
    FROM upd WHERE state = 'progress'
    UNION ALL
    SELECT finished_at,
           CASE WHEN status = 'completed' THEN 'task_completed'
                WHEN status = 'cancelled' THEN 'task_cancelled'
                WHEN status = 'failed' THEN 'task_failed'
                WHEN state = 'rejected' THEN 'task_rejected'
                ELSE 'task_retrying' END,
           id, worker_id,
           jsonb_build_object('attempt', reported_attempt, 'command', command)
             || CASE WHEN status = 'completed' THEN
                    jsonb_build_object('duration_ms',
                        round((extract(epoch FROM finished_at - started_at) * 1000)::numeric, 3))
                WHEN error IS NOT NULL THEN jsonb_build_object('error', error)
                ELSE '{}'::jsonb END
             || CASE WHEN status = 'pending' AND state = 'failed' THEN
                    jsonb_build_object('retry_at', scheduled_at, 'next_attempt', attempt)
                ELSE '{}'::jsonb END
    FROM upd WHERE state NOT IN ('running', 'progress')
)
-- the rest of the columns feed the coordinator's metrics (wait and run time by command)
SELECT id, status, reported_attempt AS attempt, worker_id, command, old_status, state,
       due_at, started_at, finished_at
FROM upd;

-- name: timed_out_tasks
-- Deliveries that have outlived their timeout.
SELECT id, attempt, worker_id FROM tasks
WHERE status IN ('assigned', 'running')
  AND coalesce(started_at, assigned_at) + make_interval(secs => timeout_seconds) < now();

-- name: cancel_requested
-- Held tasks whose cancellation is pending (re-sent to workers after a reconnect).
SELECT id, attempt, worker_id FROM tasks
WHERE cancel_requested AND status IN ('assigned', 'running') AND worker_id = ANY($1::text[]);

-- name: existing_tasks
-- Which of these task ids ($1) still have a row (a reset deletes every task).
SELECT id FROM tasks WHERE id = ANY($1::uuid[]);

-- name: reset_lock
-- A reset sees the tasks and their counts whole: creates, claims, reports and count
-- compaction wait for it to commit; reads go on. The first statement of its transaction.
LOCK TABLE tasks, task_counts IN EXCLUSIVE MODE;

-- name: reset_tasks
-- Every task goes: pending ones (cancelled before they ran), held ones (the coordinator
-- tells their workers to stop; what those report later finds no row and is refused) and
-- finished ones. The delete trigger writes count deltas, which reset_rest clears.
WITH gone AS (
    DELETE FROM tasks RETURNING status
)
SELECT count(*) AS total,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status IN ('assigned', 'running')) AS held
FROM gone;

-- name: reset_rest
-- The rest of a reset, after reset_tasks in the same transaction: counts cleared, offline
-- worker rows dropped, live workers' counters zeroed, events replaced by one stack_reset
-- event (its id comes from the same sequence: ids keep rising, so an SSE client's
-- Last-Event-ID stays valid), the coordinator woken. $1 tasks deleted, $2 pending, $3 held.
WITH counts AS (
    DELETE FROM task_counts
), worker_deltas AS (
    DELETE FROM worker_counts
), dropped AS (
    DELETE FROM workers WHERE status = 'offline' RETURNING id
), kept AS (
    UPDATE workers SET tasks_completed = 0, tasks_failed = 0
    WHERE status <> 'offline'
    RETURNING id
), old AS (
    DELETE FROM events
), ev AS (
    INSERT INTO events (event, data)
    SELECT 'stack_reset', jsonb_build_object(
        'tasks', $1::bigint, 'pending', $2::bigint, 'running', $3::bigint,
        'workers_dropped', (SELECT count(*) FROM dropped),
        'workers_kept', (SELECT count(*) FROM kept))
    RETURNING id
), note AS (
    SELECT pg_notify('taskmaster_reset', id::text) FROM ev
)
SELECT (SELECT id FROM ev) AS event_id,
       (SELECT count(*) FROM dropped) AS workers_dropped,
       (SELECT count(*) FROM kept) AS workers_kept,
       (SELECT count(*) FROM note) AS notified;
