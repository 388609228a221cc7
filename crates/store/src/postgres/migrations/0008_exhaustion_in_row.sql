-- A new session that met an exhausted pool records it in its own row (`exhausted`: the
-- outcome, `fallback` or `reuse`; the pool, the number shown and the time are the row's
-- pool_id, number_id and started_at) instead of a row of exhaustions: one row fewer for a
-- new visitor once the pool ran dry. Exhaustions of sessions already open (a page load
-- whose number had gone) stay in exhaustions. Counts by site and time read the partial
-- index.
ALTER TABLE sessions ADD COLUMN exhausted TEXT;
CREATE INDEX sessions_exhausted ON sessions(site_id, started_at) WHERE exhausted IS NOT NULL;
