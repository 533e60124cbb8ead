-- The event log and the impressions, range-partitioned by month on ts (UTC), so retention drops whole
-- partitions (`recsys retention`) instead of deleting rows. A partitioned table's primary key must
-- contain the partition key: events are keyed (event_id, ts) and impressions (request_id, ts); the
-- writers (recsys/features/event_log.py, impression_log.py) keep an event_id logged once within the
-- dedupe window. There is no DEFAULT partition: a row in it would block creating its month later.
-- Partitions are created on demand by recsys_month_partition(); the existing rows are moved here.

-- Create (once, safely under concurrency) the partition of `parent` holding the month of `at`;
-- return its name, e.g. events_p2026_11 for [2026-11-01, 2026-12-01) UTC.
CREATE OR REPLACE FUNCTION recsys_month_partition(parent regclass, at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    first_day timestamp := date_trunc('month', at AT TIME ZONE 'UTC');
    name      text := format('%s_p%s', parent::text, to_char(first_day, 'YYYY_MM'));
BEGIN
    IF to_regclass(quote_ident(name)) IS NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('recsys_month_partition ' || name));
        IF to_regclass(quote_ident(name)) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)', name, parent,
                           first_day AT TIME ZONE 'UTC', (first_day + interval '1 month') AT TIME ZONE 'UTC');
        END IF;
    END IF;
    RETURN name;
END $$;

-- events
ALTER TABLE events RENAME TO events_unpartitioned;
ALTER INDEX events_pkey RENAME TO events_unpartitioned_pkey;
ALTER INDEX events_user_ts RENAME TO events_unpartitioned_user_ts;
ALTER INDEX events_ts RENAME TO events_unpartitioned_ts;
-- LIKE copies the columns (with any added by other migrations), NOT NULLs, defaults and checks.
CREATE TABLE events (LIKE events_unpartitioned INCLUDING ALL EXCLUDING INDEXES, PRIMARY KEY (event_id, ts))
    PARTITION BY RANGE (ts);
CREATE INDEX events_user_ts ON events (user_id, ts);
CREATE INDEX events_ts ON events (ts);
SELECT recsys_month_partition('events', m)
FROM (SELECT DISTINCT date_trunc('month', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m FROM events_unpartitioned
      UNION SELECT now() UNION SELECT now() + interval '1 month') months;
INSERT INTO events SELECT * FROM events_unpartitioned;
DROP TABLE events_unpartitioned;

-- impressions
ALTER TABLE impressions RENAME TO impressions_unpartitioned;
ALTER INDEX impressions_pkey RENAME TO impressions_unpartitioned_pkey;
ALTER INDEX impressions_ts RENAME TO impressions_unpartitioned_ts;
CREATE TABLE impressions (LIKE impressions_unpartitioned INCLUDING ALL EXCLUDING INDEXES,
                          PRIMARY KEY (request_id, ts))
    PARTITION BY RANGE (ts);
CREATE INDEX impressions_ts ON impressions (ts);
SELECT recsys_month_partition('impressions', m)
FROM (SELECT DISTINCT date_trunc('month', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m FROM impressions_unpartitioned
      UNION SELECT now() UNION SELECT now() + interval '1 month') months;
INSERT INTO impressions SELECT * FROM impressions_unpartitioned;
DROP TABLE impressions_unpartitioned;
