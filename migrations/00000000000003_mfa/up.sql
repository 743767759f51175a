-- Second factors: TOTP enrolments, recovery codes, and the challenges that sit between the first
-- and second factor of a sign-in. Constraint names are spelled out because the adapter maps
-- unique violations by name.

CREATE TABLE mfa_enrolments (
    user_id        uuid        NOT NULL,
    -- Sealed under the master key with the user id as context; never the secret itself.
    sealed_secret  bytea       NOT NULL,
    created_at     timestamptz NOT NULL,
    -- NULL until a first code proves the authenticator has the secret.
    confirmed_at   timestamptz,
    -- The last time step whose code was accepted: the replay guard.
    last_used_step bigint,
    CONSTRAINT mfa_enrolments_pkey PRIMARY KEY (user_id),
    CONSTRAINT mfa_enrolments_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE
);

CREATE TABLE recovery_codes (
    user_id    uuid        NOT NULL,
    -- The code's first group: a non-secret key, so that checking a code costs one hash.
    lookup     text        NOT NULL,
    -- Argon2id (PHC string) of the whole code; never the code itself.
    hash       text        NOT NULL,
    created_at timestamptz NOT NULL,
    used_at    timestamptz,
    -- Leads with user_id, so it also serves the foreign key and "every code of this user".
    CONSTRAINT recovery_codes_pkey PRIMARY KEY (user_id, lookup),
    CONSTRAINT recovery_codes_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE
);

CREATE TABLE mfa_challenges (
    -- SHA-256 of the token handed to the client; the token itself is never stored.
    token_hash bytea       NOT NULL,
    user_id    uuid        NOT NULL,
    tenant_id  uuid        NOT NULL,
    -- Methods of the first factor, carried into the session once the second one passes.
    amr        text[]      NOT NULL,
    expires_at timestamptz NOT NULL,
    -- Codes tried so far, right or wrong.
    attempts   integer     NOT NULL DEFAULT 0,
    CONSTRAINT mfa_challenges_pkey PRIMARY KEY (token_hash),
    CONSTRAINT mfa_challenges_token_hash_length CHECK (octet_length(token_hash) = 32),
    CONSTRAINT mfa_challenges_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT mfa_challenges_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT mfa_challenges_amr_not_null CHECK (array_position(amr, NULL) IS NULL),
    CONSTRAINT mfa_challenges_attempts_check CHECK (attempts >= 0)
);
-- For sweeping expired challenges.
CREATE INDEX mfa_challenges_expires_at_idx ON mfa_challenges (expires_at);
-- The foreign keys are checked from the referenced side too (see the core migration).
CREATE INDEX mfa_challenges_user_id_idx ON mfa_challenges (user_id);
CREATE INDEX mfa_challenges_tenant_id_idx ON mfa_challenges (tenant_id);
