-- Heartbeats answered from memory are written back by session.
CREATE INDEX leases_session ON leases(session_id);
