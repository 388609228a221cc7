-- A new session's first page view lives in its session row (started_at, landing_url and
-- landing_title) instead of a row of page_views: one row and two index entries fewer for
-- every new visitor. Sessions written before keep theirs in page_views (landing_in_row 0).
ALTER TABLE sessions ADD COLUMN landing_title TEXT;
ALTER TABLE sessions ADD COLUMN landing_in_row BIGINT NOT NULL DEFAULT 0;
