-- 0006: the idempotency key's unique index holds only the tasks that have a key. As a UNIQUE
-- column it indexed every row version of every task, NULL keys included: each task wrote
-- three entries there (created, claimed, finished) that no lookup could use.
ALTER TABLE tasks DROP CONSTRAINT tasks_idempotency_key_key;
CREATE UNIQUE INDEX tasks_idempotency_key_idx ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
