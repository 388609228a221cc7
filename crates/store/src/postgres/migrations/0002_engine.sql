-- The tracking engine: rules, sessions and page views, leases of pool numbers, pool
-- Flags are BIGINT 0/1 on both backends: sqlx's Any driver cannot read SQLite booleans.
-- exhaustions, and calls with their attribution.
CREATE TABLE rules (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    site_id     TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    priority    BIGINT NOT NULL,
    match_json  TEXT NOT NULL,
    pool_id     TEXT,
    number_id   TEXT,
    swap        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX rules_site ON rules(site_id, priority);

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    site_id         TEXT NOT NULL,
    visitor_id      TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    last_activity   BIGINT NOT NULL,
    track_code      TEXT NOT NULL,
    channel         TEXT NOT NULL,
    source          TEXT NOT NULL,
    medium          TEXT NOT NULL,
    campaign        TEXT,
    content         TEXT,
    keyword         TEXT,
    referrer        TEXT,
    referrer_domain TEXT,
    landing_url     TEXT NOT NULL,
    landing_path    TEXT NOT NULL,
    gclid           TEXT,
    yclid           TEXT,
    fbclid          TEXT,
    ga_client_id    TEXT,
    ym_client_id    TEXT,
    user_agent      TEXT,
    device          TEXT,
    browser         TEXT,
    os              TEXT,
    ip              TEXT,
    city            TEXT,
    screen          TEXT,
    lang            TEXT,
    is_bot          BIGINT NOT NULL,
    rule_id         TEXT,
    pool_id         TEXT,
    number_id       TEXT,
    lease_id        TEXT,
    page_count      BIGINT NOT NULL
);
CREATE INDEX sessions_visitor ON sessions(site_id, visitor_id, started_at);
CREATE INDEX sessions_code ON sessions(site_id, track_code, last_activity);
CREATE INDEX sessions_started ON sessions(site_id, started_at);

CREATE TABLE page_views (
    id          TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    url         TEXT NOT NULL,
    title       TEXT
);
CREATE INDEX page_views_session ON page_views(session_id, at);

CREATE TABLE leases (
    id            TEXT PRIMARY KEY,
    site_id       TEXT NOT NULL,
    pool_id       TEXT NOT NULL,
    number_id     TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    visitor_id    TEXT NOT NULL,
    source        TEXT NOT NULL,
    leased_at     BIGINT NOT NULL,
    last_activity BIGINT NOT NULL,
    hold_until    BIGINT NOT NULL,
    ended_at      BIGINT
);
CREATE INDEX leases_number ON leases(number_id, leased_at);
CREATE INDEX leases_visitor ON leases(site_id, visitor_id, leased_at);

-- The latest lease of each pool number, so allocation reads one row per number.
CREATE TABLE number_state (
    number_id  TEXT PRIMARY KEY,
    pool_id    TEXT NOT NULL,
    lease_id   TEXT NOT NULL
);
CREATE INDEX number_state_pool ON number_state(pool_id);

CREATE TABLE exhaustions (
    id          TEXT PRIMARY KEY,
    site_id     TEXT NOT NULL,
    pool_id     TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    at          BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    number_id   TEXT
);
CREATE INDEX exhaustions_pool ON exhaustions(pool_id, at);

CREATE TABLE calls (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL,
    site_id          TEXT NOT NULL,
    provider         TEXT NOT NULL,
    provider_call_id TEXT NOT NULL,
    tracking_number  TEXT NOT NULL,
    number_id        TEXT,
    number_kind      TEXT,
    caller           TEXT NOT NULL,
    started_at       BIGINT NOT NULL,
    status           TEXT NOT NULL,
    talk_seconds     BIGINT NOT NULL,
    method           TEXT NOT NULL,
    confidence       DOUBLE PRECISION NOT NULL,
    lease_id         TEXT,
    session_id       TEXT,
    visitor_id       TEXT,
    channel          TEXT NOT NULL,
    source           TEXT NOT NULL,
    medium           TEXT,
    campaign         TEXT,
    keyword          TEXT,
    landing_url      TEXT,
    created_at       BIGINT NOT NULL,
    UNIQUE (provider, provider_call_id)
);
CREATE INDEX calls_site ON calls(site_id, started_at);
CREATE INDEX calls_caller ON calls(site_id, caller, started_at);
