-- A new session that met an exhausted pool records it in its own row (`exhausted`: the
-- outcome, `fallback` or `reuse`; the pool, the number shown and the time are the row's
-- pool_id, number_id and started_at) instead of a row of exhaustions and its index entry:
-- a third of what a new visitor's transaction wrote once the pool ran dry. Exhaustions of
-- sessions already open (a page load whose number had gone) stay in exhaustions. Sessions'
-- ids are time-ordered (UUIDv7 of started_at), so counts over a time window read a range of
-- the primary key.
ALTER TABLE sessions ADD COLUMN exhausted TEXT;
