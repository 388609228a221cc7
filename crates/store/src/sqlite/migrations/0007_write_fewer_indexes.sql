-- Index entries no query reads, each written on the hottest path (every page load):
-- * page views and exhaustions are read by session or by site, never by their id, and
--   their TEXT primary keys were a b-tree each that every row went into (the ids stay,
--   made unique as before by being fresh UUIDs);
-- * sessions_code carried last_activity, so every page load of a session moved its entry;
--   a track code names a handful of sessions at most (codes come round after 90 000
--   sessions), whose activity is read from their rows.
-- SQLite drops a primary key only by building the table again.
CREATE TABLE page_views_new (
    id          TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    url         TEXT NOT NULL,
    title       TEXT
);
INSERT INTO page_views_new (id, session_id, at, kind, url, title)
    SELECT id, session_id, at, kind, url, title FROM page_views;
DROP TABLE page_views;
ALTER TABLE page_views_new RENAME TO page_views;
CREATE INDEX page_views_session ON page_views(session_id, at);

CREATE TABLE exhaustions_new (
    id          TEXT NOT NULL,
    site_id     TEXT NOT NULL,
    pool_id     TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    at          BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    number_id   TEXT
);
INSERT INTO exhaustions_new (id, site_id, pool_id, session_id, at, outcome, number_id)
    SELECT id, site_id, pool_id, session_id, at, outcome, number_id FROM exhaustions;
DROP TABLE exhaustions;
ALTER TABLE exhaustions_new RENAME TO exhaustions;
CREATE INDEX exhaustions_site ON exhaustions(site_id, at);

DROP INDEX sessions_code;
CREATE INDEX sessions_code ON sessions(site_id, track_code);
