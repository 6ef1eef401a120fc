-- TaskMaster schema snapshot. Must equal the result of applying migrations/ in order
-- (tests/integration/test_migrations.py checks it). Change both together.

CREATE TABLE tasks (
    id               uuid PRIMARY KEY,
    command          text NOT NULL,
    payload          jsonb NOT NULL DEFAULT '{}'::jsonb,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'assigned', 'running', 'completed', 'failed', 'cancelled')),
    priority         integer NOT NULL DEFAULT 0,
    scheduled_at     timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    assigned_at      timestamptz,
    started_at       timestamptz,
    completed_at     timestamptz,
    failed_at        timestamptz,
    cancelled_at     timestamptz,
    worker_id        text,
    attempt          integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_seconds  double precision NOT NULL DEFAULT 300 CHECK (timeout_seconds > 0),
    progress         smallint NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    result           jsonb,
    error            text,
    idempotency_key  text,
    cancel_requested boolean NOT NULL DEFAULT false,
    -- one entry per attempt that did not complete: {attempt, worker_id, error, at}
    history          jsonb NOT NULL DEFAULT '[]'::jsonb
);

-- the queue: what the coordinator claims from
CREATE INDEX tasks_pending_idx ON tasks (priority DESC, scheduled_at, id) WHERE status = 'pending';
-- what each worker holds
CREATE INDEX tasks_active_idx ON tasks (worker_id) WHERE status IN ('assigned', 'running');
-- GET /api/tasks, newest first, with and without ?status=
CREATE INDEX tasks_created_idx ON tasks (created_at DESC, id DESC);
CREATE INDEX tasks_status_created_idx ON tasks (status, created_at DESC, id DESC);
-- queue-wait statistics over the most recent starts
CREATE INDEX tasks_started_idx ON tasks (started_at DESC) WHERE started_at IS NOT NULL;
-- a create repeated with its idempotency key finds the first one (only keyed tasks here)
CREATE UNIQUE INDEX tasks_idempotency_key_idx ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE workers (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    host            text NOT NULL DEFAULT '',
    pid             integer NOT NULL DEFAULT 0,
    status          text NOT NULL DEFAULT 'online' CHECK (status IN ('online', 'draining', 'offline')),
    capacity        integer NOT NULL DEFAULT 1 CHECK (capacity >= 1),
    commands        text[] NOT NULL DEFAULT '{}',
    tasks_completed bigint NOT NULL DEFAULT 0,
    tasks_failed    bigint NOT NULL DEFAULT 0,
    registered_at   timestamptz NOT NULL DEFAULT now(),
    last_heartbeat  timestamptz NOT NULL DEFAULT now(),
    offline_at      timestamptz,
    -- SHA-256 of the secret the coordinator issued to the worker: its proof of identity
    secret_hash     bytea,
    -- the coordinator whose stream holds the worker, and until when (renewed by it)
    coordinator_id  text,
    lease_expires_at timestamptz
);

-- completed and failed counts of workers not yet folded into their rows (by the
-- coordinator's housekeeping): the report statement inserts here, so it takes no lock on
-- the worker rows the claim statement locks
CREATE TABLE worker_counts (
    id        bigserial PRIMARY KEY,
    worker_id text NOT NULL,
    completed bigint NOT NULL,
    failed    bigint NOT NULL
);
CREATE INDEX worker_counts_worker_idx ON worker_counts (worker_id);

-- every coordinator running on the database, with its own lease (renewed while it runs)
CREATE TABLE coordinators (
    id               text PRIMARY KEY,
    name             text NOT NULL,
    address          text NOT NULL DEFAULT '',
    started_at       timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz NOT NULL
);

-- commands a worker has offered; the scheduler refuses any other
CREATE TABLE commands (
    name       text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);

-- the lifecycle feed behind SSE; ids are the SSE ids
CREATE TABLE events (
    id        bigserial PRIMARY KEY,
    ts        timestamptz NOT NULL DEFAULT clock_timestamp(),
    event     text NOT NULL,
    task_id   uuid,
    worker_id text,
    data      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX events_ts_idx ON events (ts);

-- per-status count deltas, written by statement triggers and compacted by the
-- coordinator, so /api/stats never counts the tasks table
CREATE TABLE task_counts (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    status text NOT NULL,
    delta  bigint NOT NULL
);
CREATE INDEX task_counts_at_idx ON task_counts (at);

CREATE FUNCTION tasks_counted_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (status, delta)
        SELECT status, count(*) FROM new_rows GROUP BY status;
    -- every way of creating tasks writes their task_scheduled events here, once
    INSERT INTO events (ts, event, task_id, data)
        SELECT created_at, 'task_scheduled', id,
               jsonb_build_object('command', command, 'scheduled_at', scheduled_at)
        FROM new_rows;
    IF EXISTS (SELECT 1 FROM new_rows WHERE status = 'pending') THEN
        PERFORM pg_notify('taskmaster_tasks', '');
    END IF;
    RETURN NULL;
END $$;

-- wakes the assigner when a task comes back to pending; two linear scans, not a join of the
-- transition tables (they have no index: a join is quadratic in the rows updated)
CREATE FUNCTION tasks_counted_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (status, delta)
        SELECT status, sum(d) FROM (
            SELECT status, 1 AS d FROM new_rows
            UNION ALL
            SELECT status, -1 AS d FROM old_rows
        ) changes
        GROUP BY status HAVING sum(d) <> 0;
    IF EXISTS (SELECT 1 FROM new_rows WHERE status = 'pending')
       AND EXISTS (SELECT 1 FROM old_rows WHERE status <> 'pending') THEN
        PERFORM pg_notify('taskmaster_tasks', '');
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION tasks_counted_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (status, delta)
        SELECT status, -count(*) FROM old_rows GROUP BY status;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_counted_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_counted_insert();
CREATE TRIGGER tasks_counted_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_counted_update();
CREATE TRIGGER tasks_counted_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_counted_delete();

CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('taskmaster_events', '');
    RETURN NULL;
END $$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

INSERT INTO commands (name) VALUES
    ('demo-job'), ('noop'), ('sleep'), ('fail'), ('flaky'), ('cpu');
