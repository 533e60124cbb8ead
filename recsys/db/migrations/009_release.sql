-- Release governance (recsys/release): each version's gate report beside its metrics, a `rejected`
-- stage for a version its gates refused, and the canary state machine with its decision log.
ALTER TABLE models ADD COLUMN gates jsonb;
ALTER TABLE models DROP CONSTRAINT models_stage_check;
ALTER TABLE models ADD CONSTRAINT models_stage_check
    CHECK (stage IN ('candidate', 'rejected', 'canary', 'live', 'retired'));

-- One canary at a time: the candidate's versions (kind -> version) against the control's (the live
-- versions when it started). `share` is the canary arm's share of users now; users are assigned by a
-- salted hash, so a user in the canary at 10% is still in it at 50%.
CREATE TABLE canaries (
    canary_id        bigserial PRIMARY KEY,
    candidate        jsonb NOT NULL,
    control          jsonb NOT NULL,
    salt             text NOT NULL,
    stage            smallint NOT NULL DEFAULT 0,          -- index into settings.stages
    share            real NOT NULL CHECK (share > 0 AND share <= 1),
    state            text NOT NULL DEFAULT 'running'
                     CHECK (state IN ('running', 'promoted', 'rolled_back', 'aborted')),
    settings         jsonb NOT NULL,                       -- the stages and criteria it runs under
    started_at       timestamptz NOT NULL,
    stage_started_at timestamptz NOT NULL,
    ended_at         timestamptz
);
CREATE UNIQUE INDEX canaries_one_running ON canaries ((true)) WHERE state = 'running';

-- Every transition, with who made it and the numbers it was made on (the audit log).
CREATE TABLE canary_log (
    entry_id   bigserial PRIMARY KEY,
    canary_id  bigint NOT NULL REFERENCES canaries,
    at         timestamptz NOT NULL,
    action     text NOT NULL,            -- start, advance, promote, rollback, abort
    actor      text NOT NULL,            -- 'controller', 'cli:<user>', 'key:<id>:<prefix> (<role>)'
    stage_from smallint,
    stage_to   smallint,
    reason     text NOT NULL,
    numbers    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX canary_log_canary ON canary_log (canary_id, at);

-- Impressions name the canary they were served under; events find their impression by request id.
ALTER TABLE impressions ADD COLUMN canary_id bigint;
CREATE INDEX impressions_canary ON impressions (canary_id, ts) WHERE canary_id IS NOT NULL;
CREATE INDEX events_request ON events (request_id) WHERE request_id IS NOT NULL;
