-- Merchandising rule sets (recsys/rules): immutable versions moving draft -> shadow -> live -> archived,
-- the history of what was live (for rollback), the audit log and the shadow runs' records.
CREATE TABLE IF NOT EXISTS rule_sets (
    version          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL,
    body             jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'draft' CHECK (state IN ('draft', 'shadow', 'live', 'archived')),
    based_on         integer REFERENCES rule_sets,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    state_changed_at timestamptz NOT NULL DEFAULT now()
);
-- One live set and one shadow set at a time (for every surface: a rule names its surfaces).
CREATE UNIQUE INDEX IF NOT EXISTS rule_sets_one_live ON rule_sets ((true)) WHERE state = 'live';
CREATE UNIQUE INDEX IF NOT EXISTS rule_sets_one_shadow ON rule_sets ((true)) WHERE state = 'shadow';

-- A version's rules never change: only its state does.
CREATE OR REPLACE FUNCTION rule_sets_immutable() RETURNS trigger AS $$
BEGIN
    IF NEW.body IS DISTINCT FROM OLD.body OR NEW.name IS DISTINCT FROM OLD.name THEN
        RAISE EXCEPTION 'rule set version % is immutable: create a new version', OLD.version;
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS rule_sets_immutable ON rule_sets;
CREATE TRIGGER rule_sets_immutable BEFORE UPDATE ON rule_sets FOR EACH ROW EXECUTE FUNCTION rule_sets_immutable();

CREATE TABLE IF NOT EXISTS rule_publications (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version      integer NOT NULL REFERENCES rule_sets,
    action       text NOT NULL CHECK (action IN ('publish', 'rollback')),
    published_by text NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS rule_audit (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL CHECK (action IN ('create', 'shadow', 'unshadow', 'publish', 'rollback', 'archive')),
    version integer REFERENCES rule_sets,
    detail  jsonb NOT NULL DEFAULT '{}'   -- from/to state, and a JSON Patch (RFC 6902) against the set it replaces
);
CREATE INDEX IF NOT EXISTS rule_audit_version ON rule_audit (version, at);

CREATE TABLE IF NOT EXISTS rule_shadow_runs (
    version          integer NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    request_id       text NOT NULL,
    surface          text NOT NULL,
    live_version     integer,
    live_skus        text[] NOT NULL,
    shadow_skus      text[] NOT NULL,
    overlap          real NOT NULL,      -- |live & shadow| / k
    pins_applied     integer NOT NULL,
    pins_honoured    integer NOT NULL,
    blocked_removed  integer NOT NULL,   -- live-rail items the shadow set blocks
    live_margin      real,
    shadow_margin    real,
    live_price       real,
    shadow_price     real,
    live_long_tail   real,               -- share of the rail outside the best-selling head
    shadow_long_tail real,
    live_ms          real NOT NULL,      -- the live slots stage
    shadow_ms        real NOT NULL       -- the shadow set's arrangement (off the request path)
);
CREATE INDEX IF NOT EXISTS rule_shadow_runs_version ON rule_shadow_runs (version, at);
