-- 0004: a worker proves who it is. The coordinator issues each new worker its id and a
-- secret and keeps only the secret's SHA-256 here; a worker that comes back (after a break,
-- or to a restarted coordinator) must show the secret. Rows written before have none: those
-- workers register again as new ones.
ALTER TABLE workers ADD COLUMN secret_hash bytea;
