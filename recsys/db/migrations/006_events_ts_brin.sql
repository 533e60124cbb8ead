-- The log's time index becomes BRIN. The writer probes each new event's (event_id, ts window) against
-- the primary key; with a btree on ts beside it, a month partition whose statistics still say "empty"
-- (a new month, or during a bulk load) was probed through the ts index instead, one range scan per row:
-- the 730k-event demo load slowed to minutes per chunk. A BRIN index serves the time-range reads (the
-- log is appended in time order), is tiny, and is never the cheaper path for a per-row probe.
DROP INDEX IF EXISTS events_ts;
CREATE INDEX events_ts ON events USING brin (ts);
