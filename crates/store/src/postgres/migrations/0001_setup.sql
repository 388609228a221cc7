-- Accounts, API tokens and the setup resources: sites, pools, sources, tracking numbers.
-- Times are milliseconds since the Unix epoch (UTC); lists of values are JSON text.
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

CREATE TABLE sites (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    domains        TEXT NOT NULL,
    timezone       TEXT NOT NULL,
    default_region TEXT NOT NULL,
    site_numbers   TEXT NOT NULL,
    forward_to     TEXT,
    public_key     TEXT NOT NULL UNIQUE,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX sites_account ON sites(account_id, id);

CREATE TABLE pools (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    site_id       TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    hold_minutes  BIGINT NOT NULL,
    on_exhaustion TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (site_id, name)
);

CREATE TABLE sources (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    site_id     TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    channel     TEXT NOT NULL,
    description TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (site_id, name)
);

CREATE TABLE tracking_numbers (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    site_id     TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    number      TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    pool_id     TEXT REFERENCES pools(id),
    source      TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX tracking_numbers_site ON tracking_numbers(site_id, id);
CREATE INDEX tracking_numbers_pool ON tracking_numbers(pool_id);
