-- Dead letters: every message the consumer could not store, with the reason, kept once per source
-- position (topic, partition, offset), so replaying a batch after a crash never duplicates a letter.
-- `published` marks the letters already produced to the dead-letter topic.
CREATE TABLE dead_letters (
    letter_id   text PRIMARY KEY,
    source      text NOT NULL,
    topic       text,
    "partition" integer,
    "offset"    bigint,
    user_id     text,
    reason      text NOT NULL,
    payload     bytea NOT NULL,
    published   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_created ON dead_letters (created_at);
