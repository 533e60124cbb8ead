-- The model registry: every trained artefact with its config, metrics and where it lives.
CREATE TABLE models (
    version      text PRIMARY KEY,
    kind         text NOT NULL,            -- 'two_tower', 'als', 'ranker', ...
    config       jsonb NOT NULL DEFAULT '{}',
    metrics      jsonb NOT NULL DEFAULT '{}',
    artifact_uri text NOT NULL,            -- a local folder or any fsspec URI
    stage        text NOT NULL DEFAULT 'candidate'
                 CHECK (stage IN ('candidate', 'canary', 'live', 'retired')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX models_one_live ON models (kind) WHERE stage = 'live';
