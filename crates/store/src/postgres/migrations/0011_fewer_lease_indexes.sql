-- Two of the lease indexes every visitor who gets a pool number writes, made cheaper.
-- Heartbeats written back from memory find the lease through the session's row
-- (`sessions.lease_id`, the lease the session shows), so no index of leases by session is
-- read any more. The numbers a returning visitor held are read by visitor id alone (a
-- visitor's leases are a few rows; site and pool are checked on them): the key is half as
-- long, so its b-tree splits and rebalances less often.
DROP INDEX leases_session;
DROP INDEX leases_visitor;
CREATE INDEX leases_visitor ON leases(visitor_id);
