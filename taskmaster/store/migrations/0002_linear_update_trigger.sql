-- 0002: the update trigger's wake-up check no longer joins its two transition tables.
-- They have no index, so the join was quadratic in the rows one statement updates: a
-- statement touching 20,000 tasks spent a minute in it. Two scans are linear; a statement
-- that both takes some task out of pending and puts another back wakes the assigner once
-- more than needed, which is harmless.
CREATE OR REPLACE FUNCTION tasks_counted_update() RETURNS trigger LANGUAGE plpgsql AS $$
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
