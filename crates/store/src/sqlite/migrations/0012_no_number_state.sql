-- Every visitor who got a pool number wrote its number's row here too (about a sixth of
-- a new lease's pages: new keys in a b-tree that rebalances as it fills). On SQLite it
-- was only read when a pool's picture is made (at start, after a setup change): the
-- latest lease of each number is read there through `leases_number` instead. PostgreSQL
-- keeps the table: its allocation reads the free numbers through it in every batch.
DROP TABLE number_state;
