-- The dashboard (recsys/web): a read-only role, when each SKU was listed, what each request cost, and
-- rollups the dashboard reads instead of scanning impressions and events (recsys/web/rollups.py).

-- viewer: sees the dashboard, changes nothing.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('storefront', 'viewer', 'merchandiser', 'ml', 'admin'));

-- When a SKU entered the catalog: zero-impression SKUs are flagged only 72 h after it. A reload of
-- the catalog keeps it (the upsert does not name it); a new SKU gets now().
ALTER TABLE items ADD COLUMN listed_at timestamptz;
UPDATE items SET listed_at = coalesce(launch_date::timestamptz, updated_at);
ALTER TABLE items ALTER COLUMN listed_at SET DEFAULT now();
ALTER TABLE items ALTER COLUMN listed_at SET NOT NULL;

-- The time the recommender took for the request (ms), for the latency charts.
ALTER TABLE impressions ADD COLUMN latency_ms real;

-- Per hour, surface and arm (live, or control and canary while one runs): requests, slots shown, what followed from them
-- (events attributed by request_id) and latency percentiles.
CREATE TABLE rollup_traffic (
    hour         timestamptz NOT NULL,
    surface      text NOT NULL,
    arm          text NOT NULL,
    requests     integer NOT NULL,
    slots        integer NOT NULL,
    clicked      integer NOT NULL,   -- requests with a recommended product viewed (as the canary counts)
    carted       integer NOT NULL,   -- ... with an add-to-cart
    converted    integer NOT NULL,   -- ... with a purchase
    revenue      numeric(14, 2) NOT NULL,
    latency_p50  real,
    latency_p95  real,
    PRIMARY KEY (hour, surface, arm)
);

-- Slot impressions per SKU and day (7-day views, zero-impression SKUs) and per hour (the last 24 h;
-- hours older than two days are pruned).
CREATE TABLE rollup_sku_day (
    day         date NOT NULL,
    sku         text NOT NULL,
    impressions integer NOT NULL,
    PRIMARY KEY (day, sku)
);
CREATE TABLE rollup_sku_hour (
    hour        timestamptz NOT NULL,
    sku         text NOT NULL,
    impressions integer NOT NULL,
    PRIMARY KEY (hour, sku)
);

-- Events received per minute and type (events per second on the overview).
CREATE TABLE rollup_events (
    minute timestamptz NOT NULL,
    type   text NOT NULL,
    events integer NOT NULL,
    PRIMARY KEY (minute, type)
);

-- The SKUs that make the popularity head (the 20% most viewed over the last 30 days): everything
-- else is the long tail, as the training metrics define it (recsys/train/metrics.py).
CREATE TABLE rollup_head_skus (sku text PRIMARY KEY);

-- How far each rollup has been computed.
CREATE TABLE rollup_state (
    name         text PRIMARY KEY,
    through      timestamptz NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now()
);
