-- The full call log: call progress, who answered, recordings, first-time callers, the work
-- done on a call; telephony connections; the raw webhook log and the event outbox.
ALTER TABLE calls ADD COLUMN connection_id TEXT;
ALTER TABLE calls ADD COLUMN answered_at BIGINT;
ALTER TABLE calls ADD COLUMN ended_at BIGINT;
ALTER TABLE calls ADD COLUMN wait_seconds BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN agent TEXT;
ALTER TABLE calls ADD COLUMN recording_url TEXT;
ALTER TABLE calls ADD COLUMN recording_path TEXT;
ALTER TABLE calls ADD COLUMN first_time BIGINT NOT NULL DEFAULT 1;
ALTER TABLE calls ADD COLUMN category TEXT NOT NULL DEFAULT 'unset';
ALTER TABLE calls ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE calls ADD COLUMN deal_value BIGINT;
ALTER TABLE calls ADD COLUMN comment TEXT;
ALTER TABLE calls ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX calls_account ON calls(account_id, id);

ALTER TABLE sites ADD COLUMN repeat_window_days BIGINT NOT NULL DEFAULT 90;
-- Days a call recording is kept; NULL keeps them.
ALTER TABLE accounts ADD COLUMN recording_retention_days BIGINT;

CREATE TABLE telephony_connections (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    site_id     TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    provider    TEXT NOT NULL,
    hook_key    TEXT NOT NULL UNIQUE,
    secret      TEXT,
    settings    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX telephony_site ON telephony_connections(site_id, id);

-- Agents: an extension or phone that answers calls, and the person behind it.
CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    site_id     TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    ext         TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (site_id, ext)
);

-- Every accepted webhook, stored before it is answered.
CREATE TABLE webhook_log (
    id               TEXT PRIMARY KEY,
    connection_id    TEXT,
    provider         TEXT NOT NULL,
    provider_call_id TEXT,
    kind             TEXT NOT NULL,
    received_at      BIGINT NOT NULL,
    body             TEXT NOT NULL
);
CREATE INDEX webhook_log_call ON webhook_log(provider, provider_call_id);

-- Events for integrations, written in the same transaction as the call change.
CREATE TABLE outbox (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    site_id       TEXT NOT NULL,
    kind          TEXT NOT NULL,
    call_id       TEXT,
    payload       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    delivered_at  BIGINT
);
CREATE INDEX outbox_pending ON outbox(delivered_at, id);
