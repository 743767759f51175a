-- Brute-force throttling: one leaky-bucket failure counter per opaque key (the application
-- passes hashes), shared by every instance. A row holds the score as of updated_at; readers
-- drain it to their own clock.

CREATE TABLE throttle_counters (
    key        text             NOT NULL,
    score      double precision NOT NULL,
    updated_at timestamptz      NOT NULL,
    CONSTRAINT throttle_counters_pkey PRIMARY KEY (key),
    CONSTRAINT throttle_counters_key_length CHECK (length(key) BETWEEN 1 AND 200),
    CONSTRAINT throttle_counters_score_check CHECK (score >= 0)
);
-- For purging counters that have drained to nothing.
CREATE INDEX throttle_counters_updated_at_idx ON throttle_counters (updated_at);
