-- Indexes kept for the queries that read them. No query reads sessions by visitor or by
-- start time (deleting a site's sessions uses sessions_code, which starts with site_id),
-- and each new session paid two index entries for them. Exhaustions are counted per site
-- over a time window, which the per-pool index did not serve.
DROP INDEX sessions_visitor;
DROP INDEX sessions_started;
DROP INDEX exhaustions_pool;
CREATE INDEX exhaustions_site ON exhaustions(site_id, at);
