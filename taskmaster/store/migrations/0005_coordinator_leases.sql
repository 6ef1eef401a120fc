-- 0005: any number of coordinators on one database. Each coordinator holds a lease row of
-- its own, renewed while it runs; each worker's liveness is a lease held by the coordinator
-- its stream is connected to, renewed in batches by that coordinator. Any coordinator puts
-- back the tasks of a worker whose lease lapsed while its holder is not alive either.
CREATE TABLE coordinators (
    id               text PRIMARY KEY,
    name             text NOT NULL,
    address          text NOT NULL DEFAULT '',
    started_at       timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz NOT NULL
);
ALTER TABLE workers ADD COLUMN coordinator_id text;
ALTER TABLE workers ADD COLUMN lease_expires_at timestamptz;
