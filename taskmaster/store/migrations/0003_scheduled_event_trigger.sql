-- 0003: the task_scheduled event of a new task is written by the insert trigger, for every
-- statement that creates tasks, instead of by a CTE copied into each of them.
CREATE OR REPLACE FUNCTION tasks_counted_insert() RETURNS trigger LANGUAGE plpgsql AS $$
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
