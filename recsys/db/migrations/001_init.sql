-- The source of truth: catalog, accessory graph, content/model vectors, the offline event log,
-- and served impressions.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE items (
    sku           text PRIMARY KEY,
    catalog       text NOT NULL DEFAULT 'synthetic',
    title         text NOT NULL,
    family        text,
    category      text,
    category_path text,
    kind          text,
    brand         text,
    price         numeric(12, 2),
    margin        real,
    price_band    smallint,
    specs         jsonb NOT NULL DEFAULT '{}',
    spec_text     text,
    image_uri     text,
    launch_date   date,
    stock         integer NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX items_category ON items (category);

-- src is a device, dst an accessory or replacement part that fits it.
CREATE TABLE item_edges (
    src_sku text NOT NULL REFERENCES items ON DELETE CASCADE,
    dst_sku text NOT NULL REFERENCES items ON DELETE CASCADE,
    kind    text NOT NULL,
    weight  real NOT NULL DEFAULT 1,
    PRIMARY KEY (src_sku, dst_sku, kind)
);
CREATE INDEX item_edges_dst ON item_edges (dst_sku);

-- One row per (vector set, SKU). Each vector set gets its own partial HNSW index on a cast to its
-- dimension, so a new set is built beside the live one and switched by updating vector_sets.
CREATE TABLE item_vectors (
    model_version text NOT NULL,
    sku           text NOT NULL,
    embedding     vector NOT NULL,
    PRIMARY KEY (model_version, sku)
);

CREATE TABLE vector_sets (
    model_version text PRIMARY KEY,
    purpose       text NOT NULL,           -- 'content' or 'retrieval'
    dim           integer NOT NULL,
    index_name    text,
    state         text NOT NULL DEFAULT 'building' CHECK (state IN ('building', 'ready', 'live', 'retired')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX vector_sets_one_live ON vector_sets (purpose) WHERE state = 'live';

-- The offline event log, idempotent by event_id.
CREATE TABLE events (
    event_id    text PRIMARY KEY,
    type        text NOT NULL,
    user_id     text NOT NULL,
    session_id  text,
    sku         text NOT NULL,
    ts          timestamptz NOT NULL,
    device      text,
    geo         text,
    price       numeric(12, 2),
    quantity    integer,
    order_id    text,
    surface     text,
    request_id  text,
    slot        smallint,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_user_ts ON events (user_id, ts);
CREATE INDEX events_ts ON events (ts);

CREATE TABLE impressions (
    request_id       text PRIMARY KEY,
    ts               timestamptz NOT NULL,
    surface          text NOT NULL,
    user_id          text,
    session_id       text,
    context_skus     text[] NOT NULL DEFAULT '{}',
    skus             text[] NOT NULL,
    sources          text[] NOT NULL,
    model_version    text,
    rule_set_version text,
    arm              text,
    degraded         text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX impressions_ts ON impressions (ts);

-- Which dataset is loaded (so `recsys data load` and `make demo` are idempotent).
CREATE TABLE datasets (
    name        text PRIMARY KEY,
    fingerprint text NOT NULL,
    items       integer NOT NULL,
    events      integer NOT NULL,
    loaded_at   timestamptz NOT NULL DEFAULT now()
);
