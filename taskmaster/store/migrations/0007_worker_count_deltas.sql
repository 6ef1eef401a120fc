-- 0007: a worker's completed and failed counts are written as deltas, as task_counts are,
-- and folded into its row by the coordinator's housekeeping. The statement that writes
-- reports used to update the worker rows, which the claim statement locks (FOR SHARE, so
-- that a worker cannot move to another coordinator under a claim): each of the two waited
-- for the other to commit.
CREATE TABLE worker_counts (
    id        bigserial PRIMARY KEY,
    worker_id text NOT NULL,
    completed bigint NOT NULL,
    failed    bigint NOT NULL
);
CREATE INDEX worker_counts_worker_idx ON worker_counts (worker_id);
