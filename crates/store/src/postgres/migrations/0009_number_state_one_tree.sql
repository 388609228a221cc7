-- The latest lease of each pool number is read by number only (allocation's joins), and
-- written for every number leased anew: `number_state_pool` was written each time and
-- read by no query.
DROP INDEX number_state_pool;
