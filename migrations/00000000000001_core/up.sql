-- The core schema: accounts, tenants, sessions with their refresh-token families, signing keys.
-- Constraint names are spelled out because the adapter maps unique violations by name.

CREATE TABLE users (
    id             uuid        NOT NULL,
    email          text        NOT NULL,
    display_name   text        NOT NULL,
    -- NULL for accounts that only sign in through an external provider.
    password_hash  text,
    status         text        NOT NULL,
    email_verified boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    -- Emails are stored normalised (NFKC, lower case), so plain equality is the right key.
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_status_check CHECK (status IN ('active', 'disabled', 'deleted'))
);

CREATE TABLE tenants (
    id         uuid        NOT NULL,
    name       text        NOT NULL,
    parent_id  uuid,
    owner_id   uuid        NOT NULL,
    status     text        NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT tenants_pkey PRIMARY KEY (id),
    CONSTRAINT tenants_parent_id_fkey FOREIGN KEY (parent_id) REFERENCES tenants (id),
    CONSTRAINT tenants_owner_id_fkey FOREIGN KEY (owner_id) REFERENCES users (id),
    CONSTRAINT tenants_status_check CHECK (status IN ('active', 'blocked')),
    CONSTRAINT tenants_not_own_parent CHECK (parent_id IS DISTINCT FROM id)
);
-- Foreign keys are checked from the referenced side too; without these a user or tenant
-- delete would scan the whole table.
CREATE INDEX tenants_parent_id_idx ON tenants (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tenants_owner_id_idx ON tenants (owner_id);

CREATE TABLE memberships (
    tenant_id  uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    roles      text[]      NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    CONSTRAINT memberships_pkey PRIMARY KEY (tenant_id, user_id),
    CONSTRAINT memberships_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT memberships_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id),
    -- A NULL element could not be read back as a role name.
    CONSTRAINT memberships_roles_not_null CHECK (array_position(roles, NULL) IS NULL)
);
-- "Which tenants is this user in?" is asked at every sign-in; the primary key leads with tenant.
CREATE INDEX memberships_user_id_idx ON memberships (user_id);

CREATE TABLE sessions (
    id         uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    tenant_id  uuid        NOT NULL,
    amr        text[]      NOT NULL DEFAULT '{}',
    auth_time  timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz,
    CONSTRAINT sessions_pkey PRIMARY KEY (id),
    CONSTRAINT sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT sessions_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT sessions_amr_not_null CHECK (array_position(amr, NULL) IS NULL)
);
-- For revoking every session of a user (password reset, disablement).
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

CREATE TABLE refresh_tokens (
    -- SHA-256 of the token; the token itself is never stored.
    token_hash bytea       NOT NULL,
    session_id uuid        NOT NULL,
    status     text        NOT NULL,
    issued_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (token_hash),
    CONSTRAINT refresh_tokens_token_hash_length CHECK (octet_length(token_hash) = 32),
    CONSTRAINT refresh_tokens_session_id_fkey FOREIGN KEY (session_id)
        REFERENCES sessions (id) ON DELETE CASCADE,
    CONSTRAINT refresh_tokens_status_check CHECK (status IN ('live', 'rotated', 'revoked'))
);
-- Revoking a family touches every token of one session.
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid                text        NOT NULL,
    -- Sealed under the master key with the kid as context; never the plain PKCS#8.
    sealed_private_key bytea       NOT NULL,
    created_at         timestamptz NOT NULL,
    retired_at         timestamptz,
    CONSTRAINT signing_keys_pkey PRIMARY KEY (kid)
);
-- At most one active key. Activation retires the old key before inserting the new one, in one
-- transaction, so this only fires if that order is ever broken.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((retired_at IS NULL))
    WHERE retired_at IS NULL;
