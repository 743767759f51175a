-- Roles and permissions, user metadata, the platform's root tenant, and the audit log.
-- System roles (owner, admin, member) are defined in code and never stored; these are the
-- tenants' custom roles. Memberships keep role names (the token's `roles` claim), so a rename
-- or delete here rewrites the memberships of that tenant in the same transaction.

ALTER TABLE users ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE users ADD CONSTRAINT users_metadata_object CHECK (jsonb_typeof(metadata) = 'object');
ALTER TABLE tenants ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE tenants ADD CONSTRAINT tenants_metadata_object CHECK (jsonb_typeof(metadata) = 'object');

-- Custom claims other modules register; injected into every user token they apply to.
CREATE TABLE claim_definitions (
    name            text        NOT NULL,
    -- NULL: every token; else this tenant's (and with descendants, its subtree's).
    scope_tenant_id uuid,
    descendants     boolean     NOT NULL DEFAULT false,
    source          text        NOT NULL,
    constant_value  jsonb,
    field           text,
    hook_url        text,
    hook_timeout_ms integer,
    hook_on_failure text,
    created_at      timestamptz NOT NULL,
    CONSTRAINT claim_definitions_pkey PRIMARY KEY (name),
    CONSTRAINT claim_definitions_scope_tenant_id_fkey FOREIGN KEY (scope_tenant_id)
        REFERENCES tenants (id),
    CONSTRAINT claim_definitions_source_check CHECK (
        (source = 'constant' AND constant_value IS NOT NULL)
        OR (source IN ('user_metadata', 'tenant_metadata') AND field IS NOT NULL)
        OR (source = 'hook' AND hook_url IS NOT NULL AND hook_timeout_ms > 0
            AND hook_on_failure IN ('omit', 'refuse'))
    )
);

CREATE TABLE roles (
    id          uuid        NOT NULL,
    tenant_id   uuid        NOT NULL,
    name        text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    permissions text[]      NOT NULL DEFAULT '{}',
    -- When the role got its current name: tokens older than that naming it meant another role.
    named_at    timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT roles_pkey PRIMARY KEY (id),
    CONSTRAINT roles_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT roles_tenant_name_key UNIQUE (tenant_id, name),
    CONSTRAINT roles_not_system CHECK (name NOT IN ('owner', 'admin', 'member')),
    CONSTRAINT roles_permissions_not_null CHECK (array_position(permissions, NULL) IS NULL)
);

-- Permissions registered by other modules; the IAM's own are fixed in code.
CREATE TABLE permissions (
    name        text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT permissions_pkey PRIMARY KEY (name),
    CONSTRAINT permissions_not_iam CHECK (name NOT LIKE 'iam.%')
);

-- At most one row: the tenant `iam bootstrap` created, whose owners administer the platform.
CREATE TABLE platform (
    singleton      boolean NOT NULL DEFAULT true,
    root_tenant_id uuid    NOT NULL,
    CONSTRAINT platform_pkey PRIMARY KEY (singleton),
    CONSTRAINT platform_singleton CHECK (singleton),
    CONSTRAINT platform_root_tenant_id_fkey FOREIGN KEY (root_tenant_id) REFERENCES tenants (id)
);

CREATE TABLE audit_events (
    -- The order of appending: ids are time-ordered only to the millisecond.
    seq           bigint      GENERATED ALWAYS AS IDENTITY,
    id            uuid        NOT NULL,
    at            timestamptz NOT NULL,
    actor_user_id uuid,
    actor_kind    text        NOT NULL,
    tenant_id     uuid        NOT NULL,
    action        text        NOT NULL,
    target        text        NOT NULL,
    request_id    text,
    outcome       text        NOT NULL,
    CONSTRAINT audit_events_pkey PRIMARY KEY (id),
    CONSTRAINT audit_events_actor_kind_check CHECK (actor_kind IN ('user', 'service')),
    CONSTRAINT audit_events_actor_check CHECK ((actor_kind = 'user') = (actor_user_id IS NOT NULL)),
    CONSTRAINT audit_events_outcome_check CHECK (outcome IN ('success', 'denied', 'failed'))
);
-- Listing is per tenant, newest first.
CREATE INDEX audit_events_tenant_id_idx ON audit_events (tenant_id, seq DESC);

-- Append-only: an audit trail that can be edited proves nothing.
CREATE FUNCTION iam_audit_events_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END
$$;
CREATE TRIGGER audit_events_immutable
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION iam_audit_events_immutable();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION iam_audit_events_immutable();

-- The refresh function returns the user's metadata too (custom claims read it at refresh); the
-- body is migration 5's otherwise. A changed result type needs DROP, not CREATE OR REPLACE.
DROP FUNCTION iam_refresh_session(bytea, bytea, timestamptz, timestamptz);
CREATE FUNCTION iam_refresh_session(
    presented    bytea,
    next_hash    bytea,
    now          timestamptz,
    next_expires timestamptz
)
RETURNS TABLE (
    outcome          text,
    s_id             uuid,
    s_user_id        uuid,
    s_tenant_id      uuid,
    s_amr            text[],
    s_auth_time      timestamptz,
    s_created_at     timestamptz,
    s_revoked_at     timestamptz,
    u_id             uuid,
    u_email          text,
    u_display_name   text,
    u_status         text,
    u_email_verified boolean,
    u_created_at     timestamptz,
    u_updated_at     timestamptz,
    u_metadata       jsonb,
    m_tenant_id      uuid,
    m_user_id        uuid,
    m_roles          text[],
    m_created_at     timestamptz,
    t_id             uuid,
    t_name           text,
    t_parent_id      uuid,
    t_owner_id       uuid,
    t_status         text,
    t_created_at     timestamptz,
    t_updated_at     timestamptz,
    t_metadata       jsonb
)
LANGUAGE plpgsql
VOLATILE
AS $$
DECLARE
    family        uuid;
    token_status  text;
    token_expires timestamptz;
    family_ended  timestamptz;
BEGIN
    -- A second pass is only needed if the presented token was committed by another transaction
    -- between the spend's snapshot and the lookup's.
    FOR pass IN 1..2 LOOP
        -- Concurrent spends of one token queue on its row lock; under READ COMMITTED a waiter
        -- re-checks status = 'live' after the winner commits and updates nothing.
        UPDATE refresh_tokens
           SET status = 'rotated', used_at = now
         WHERE refresh_tokens.token_hash = presented
           AND refresh_tokens.status = 'live'
           AND refresh_tokens.expires_at > now
           AND EXISTS (SELECT 1 FROM sessions
                        WHERE sessions.id = refresh_tokens.session_id
                          AND sessions.revoked_at IS NULL)
        RETURNING refresh_tokens.session_id INTO family;
        IF FOUND THEN
            INSERT INTO refresh_tokens (token_hash, session_id, status, issued_at, expires_at)
            VALUES (next_hash, family, 'live', now, next_expires);
            RETURN QUERY
                SELECT 'rotated'::text,
                       s.id, s.user_id, s.tenant_id, s.amr, s.auth_time, s.created_at,
                       s.revoked_at,
                       u.id, u.email, u.display_name, u.status, u.email_verified, u.created_at,
                       u.updated_at, u.metadata,
                       m.tenant_id, m.user_id, m.roles, m.created_at,
                       t.id, t.name, t.parent_id, t.owner_id, t.status, t.created_at,
                       t.updated_at, t.metadata
                  FROM sessions s
                  LEFT JOIN users u ON u.id = s.user_id
                  LEFT JOIN memberships m ON m.tenant_id = s.tenant_id AND m.user_id = s.user_id
                  LEFT JOIN tenants t ON t.id = s.tenant_id
                 WHERE s.id = family;
            RETURN;
        END IF;

        SELECT r.session_id, r.status, r.expires_at, s.revoked_at
          INTO family, token_status, token_expires, family_ended
          FROM refresh_tokens r
          JOIN sessions s ON s.id = r.session_id
         WHERE r.token_hash = presented;
        IF NOT FOUND THEN
            outcome := 'unknown';
            RETURN NEXT;
            RETURN;
        END IF;

        -- Spent or revoked, or a live straggler of a revoked family (a rotation that committed
        -- while the revocation's statement could not see its new token): the family is dead.
        -- Session first, then tokens: every revocation takes the locks in this order.
        IF token_status <> 'live' OR family_ended IS NOT NULL THEN
            UPDATE sessions SET revoked_at = now WHERE id = family AND revoked_at IS NULL;
            IF FOUND THEN
                PERFORM pg_notify('iam_revocations',
                                  '{"v":1,"n":0,"e":[["s","' || family::text || '"]]}');
            END IF;
            UPDATE refresh_tokens SET status = 'revoked'
             WHERE refresh_tokens.session_id = family AND refresh_tokens.status = 'live';
            outcome := 'reused';
            s_id := family;
            RETURN NEXT;
            RETURN;
        END IF;

        IF token_expires <= now THEN
            outcome := 'expired';
            RETURN NEXT;
            RETURN;
        END IF;
        -- Live and unexpired: it appeared after the spend's snapshot. Try once more.
    END LOOP;
    outcome := 'unknown';
    RETURN NEXT;
END
$$;
