-- Index entries no query reads, each written on the hottest path (every page load):
-- * page views and exhaustions are read by session or by site, never by their id, and
--   their primary keys were an index each that every row went into (the ids stay, made
--   unique as before by being fresh UUIDs);
-- * sessions_code carried last_activity, so every page load of a session moved its entry;
--   a track code names a handful of sessions at most (codes come round after 90 000
--   sessions), whose activity is read from their rows.
ALTER TABLE page_views DROP CONSTRAINT page_views_pkey;
ALTER TABLE exhaustions DROP CONSTRAINT exhaustions_pkey;
DROP INDEX sessions_code;
CREATE INDEX sessions_code ON sessions(site_id, track_code);
