-- The latest lease of each pool number is read by number only (allocation's joins), and
-- written for every number leased anew. As a rowid table with a TEXT primary key it was
-- three b-trees (the rows, the key, `number_state_pool`, which no query reads), three
-- pages to write for every visitor who gets a number. WITHOUT ROWID keeps the rows in the
-- key's own b-tree.
CREATE TABLE number_state_new (
    number_id  TEXT PRIMARY KEY,
    pool_id    TEXT NOT NULL,
    lease_id   TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO number_state_new (number_id, pool_id, lease_id)
    SELECT number_id, pool_id, lease_id FROM number_state;
DROP TABLE number_state;
ALTER TABLE number_state_new RENAME TO number_state;
