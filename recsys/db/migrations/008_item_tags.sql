-- Free-form item tags a merchandising filter can name (recsys/rules: {"field": "tags", "contains": "port:usb-c"}).
ALTER TABLE items ADD COLUMN IF NOT EXISTS tags text[] NOT NULL DEFAULT '{}';
