-- Emailed links (verification, password reset, invitation) and the mail outbox. Both are
-- written in the unit of work that makes the change they announce, so a commit without its
-- mail (or mail without its commit) cannot happen. Constraint names are spelled out because
-- the adapter maps unique violations by name.

CREATE TABLE link_tokens (
    -- SHA-256 of the token in the link; the token itself is never stored.
    hash       bytea       NOT NULL,
    kind       text        NOT NULL,
    -- The address the link was sent to (normalised).
    email      text        NOT NULL,
    -- The account it acts on; NULL for an invitation of someone without an account.
    user_id    uuid,
    -- For invitations: the tenant to join, the roles to hold there, and who invited.
    tenant_id  uuid,
    roles      text[]      NOT NULL DEFAULT '{}',
    invited_by uuid,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    -- Set when taken, or when a newer link of the same kind for the same address supersedes it.
    used_at    timestamptz,
    CONSTRAINT link_tokens_pkey PRIMARY KEY (hash),
    CONSTRAINT link_tokens_hash_length CHECK (octet_length(hash) = 32),
    CONSTRAINT link_tokens_kind_check CHECK (kind IN ('verify', 'reset', 'invite')),
    CONSTRAINT link_tokens_roles_not_null CHECK (array_position(roles, NULL) IS NULL),
    CONSTRAINT link_tokens_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT link_tokens_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT link_tokens_invited_by_fkey FOREIGN KEY (invited_by)
        REFERENCES users (id) ON DELETE SET NULL
);
-- The live links of an address, for superseding and spending them.
CREATE INDEX link_tokens_live_idx ON link_tokens (email, kind) WHERE used_at IS NULL;
-- The foreign keys are checked from the referenced side too (see the core migration).
CREATE INDEX link_tokens_user_id_idx ON link_tokens (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX link_tokens_tenant_id_idx ON link_tokens (tenant_id) WHERE tenant_id IS NOT NULL;
CREATE INDEX link_tokens_invited_by_idx ON link_tokens (invited_by) WHERE invited_by IS NOT NULL;

CREATE TABLE mail_outbox (
    id         uuid        NOT NULL,
    recipient  text        NOT NULL,
    subject    text        NOT NULL,
    -- The bodies hold secret links: never log or echo them.
    body_text  text        NOT NULL,
    body_html  text        NOT NULL,
    created_at timestamptz NOT NULL,
    -- When the message may next be claimed: at once when queued, the lease's end while a worker
    -- holds it, the retry time after a failure.
    due_at     timestamptz NOT NULL,
    attempts   integer     NOT NULL DEFAULT 0,
    sent_at    timestamptz,
    -- The last failure's reason, truncated; never a secret.
    last_error text,
    CONSTRAINT mail_outbox_pkey PRIMARY KEY (id),
    CONSTRAINT mail_outbox_attempts_check CHECK (attempts >= 0)
);
-- What the delivery worker claims next, oldest first.
CREATE INDEX mail_outbox_due_idx ON mail_outbox (due_at, created_at) WHERE sent_at IS NULL;
