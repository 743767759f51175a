-- Sign-ins of users with several memberships that named no tenant: the first factor passed, and
-- the client picks the tenant with the token whose SHA-256 is kept here (single use, 5 minutes).
CREATE TABLE tenant_selections (
    token_hash bytea       NOT NULL,
    user_id    uuid        NOT NULL,
    amr        text[]      NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT tenant_selections_pkey PRIMARY KEY (token_hash),
    CONSTRAINT tenant_selections_token_hash_length CHECK (octet_length(token_hash) = 32),
    CONSTRAINT tenant_selections_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT tenant_selections_amr_not_null CHECK (array_position(amr, NULL) IS NULL)
);
-- For sweeping expired selections.
CREATE INDEX tenant_selections_expires_at_idx ON tenant_selections (expires_at);
