-- Row-level security on every tenant-owned table: memberships, roles, sessions, refresh_tokens
-- and audit_events. (users are accounts shared across tenants; tenants and tenant_closure are
-- the directory the hierarchy answers from; mfa_challenges, tenant_selections and link_tokens
-- are pre-sign-in state found only by the hash of a secret; the rest is platform-wide.)
--
-- The service's connections run as `iam_service` (the adapter does `SET ROLE iam_service` on
-- every new connection; deployments log in as a member of it): not the tables' owner, no
-- BYPASSRLS, so the policies below bind it whatever it does. A row is visible and writable only
-- while the transaction-local setting `iam.tenant_id` names its tenant; the adapter sets it for
-- each unit of work, per operation, to the tenant that operation names. Unset, empty or
-- another tenant's id: the rows are invisible, and writes of them are refused.
--
-- The cross-tenant paths the service needs are SECURITY DEFINER functions owned by the
-- migrating role, each answering one narrow question (listed in ARCHITECTURE.md). FORCE makes
-- the policies bind the owner too; the owner's own policy is what lets those functions work.

-- Roles are per cluster: a DBA may have made it already (then the migrator needs no
-- CREATEROLE). One cluster should serve one IAM deployment, or a member of iam_service could
-- act in every IAM database on it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iam_service') THEN
        CREATE ROLE iam_service NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    ELSIF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iam_service'
                     AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role iam_service exists with SUPERUSER or BYPASSRLS: row-level '
                        'security would not bind the service; drop or alter it first';
    END IF;
    -- So that a service logging in as the migrating role (development, tests) can SET ROLE;
    -- production logs in as a role that is only a member of iam_service.
    IF NOT pg_has_role(current_user, 'iam_service', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT iam_service TO %I', current_user);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'iam_service not granted to %: grant it to the service''s login role',
                current_user;
        END;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO iam_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO iam_service;
REVOKE ALL ON __diesel_schema_migrations FROM iam_service;
-- Append-only, for the service too (the trigger refuses it for everyone).
REVOKE UPDATE, DELETE ON audit_events FROM iam_service;
-- The closure table is the triggers' alone: a forged row would forge IsDescendant and
-- delegation. The triggers run as the owner.
REVOKE INSERT, UPDATE, DELETE ON tenant_closure FROM iam_service;
ALTER FUNCTION iam_tenant_closure_insert() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION iam_tenant_closure_move() SECURITY DEFINER SET search_path = public, pg_temp;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO iam_service;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO iam_service;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO iam_service;

-- The tenant the current transaction acts in; NULL when unset. A value that is not a UUID
-- fails the statement rather than matching anything.
CREATE FUNCTION iam_current_tenant() RETURNS uuid
LANGUAGE sql STABLE AS $$ SELECT NULLIF(current_setting('iam.tenant_id', true), '')::uuid $$;

-- Whether a tenant is blocked or deleted, itself or through an ancestor.
CREATE FUNCTION iam_tenant_blocked(tenant uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM tenant_closure c JOIN tenants t ON t.id = c.ancestor_id
                    WHERE c.descendant_id = tenant AND t.status <> 'active')
$$;

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memberships TO iam_service
    USING (tenant_id = iam_current_tenant()) WITH CHECK (tenant_id = iam_current_tenant());
CREATE POLICY definer_access ON memberships TO CURRENT_USER USING (true) WITH CHECK (true);

ALTER TABLE roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE roles FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON roles TO iam_service
    USING (tenant_id = iam_current_tenant()) WITH CHECK (tenant_id = iam_current_tenant());
CREATE POLICY definer_access ON roles TO CURRENT_USER USING (true) WITH CHECK (true);

ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sessions TO iam_service
    USING (tenant_id = iam_current_tenant()) WITH CHECK (tenant_id = iam_current_tenant());
CREATE POLICY definer_access ON sessions TO CURRENT_USER USING (true) WITH CHECK (true);

-- A refresh token belongs to the tenant of its session (itself filtered by its policy).
ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON refresh_tokens TO iam_service
    USING (EXISTS (SELECT 1 FROM sessions s WHERE s.id = refresh_tokens.session_id))
    WITH CHECK (EXISTS (SELECT 1 FROM sessions s WHERE s.id = refresh_tokens.session_id));
CREATE POLICY definer_access ON refresh_tokens TO CURRENT_USER USING (true) WITH CHECK (true);

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events TO iam_service
    USING (tenant_id = iam_current_tenant()) WITH CHECK (tenant_id = iam_current_tenant());
CREATE POLICY definer_access ON audit_events TO CURRENT_USER USING (true) WITH CHECK (true);

-- The narrow cross-tenant paths. Each is keyed by what the caller already holds (a user's id
-- it has signed in, a session id from a verified token, the hash of a refresh token) and
-- answers no more than the question needs.

-- Sign-in and tenant selection: the tenants a user belongs to, with their roles there.
CREATE FUNCTION iam_memberships_of(member uuid) RETURNS SETOF memberships
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT * FROM memberships WHERE user_id = member ORDER BY created_at, tenant_id
$$;

-- Logout and revocation by session id: which tenant to act in.
CREATE FUNCTION iam_session_tenant(session uuid) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT tenant_id FROM sessions WHERE id = session
$$;

-- Logout and rotation by refresh token: which tenant its session is in.
CREATE FUNCTION iam_refresh_tenant(token bytea) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT s.tenant_id FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id
     WHERE r.token_hash = token
$$;

-- Ending every session of a disabled or deleted user: the tenants they have sessions in.
CREATE FUNCTION iam_user_session_tenants(member uuid) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT DISTINCT tenant_id FROM sessions WHERE user_id = member ORDER BY tenant_id
$$;

-- The revocation view's snapshot: revoked session ids, and every tenant's custom roles (which
-- ValidateToken turns into permissions).
CREATE FUNCTION iam_revoked_sessions_since(since timestamptz) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT id FROM sessions WHERE revoked_at >= since
$$;

CREATE FUNCTION iam_custom_roles() RETURNS SETOF roles
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT * FROM roles
$$;

-- Only the service may call the definer functions (functions are executable by PUBLIC by
-- default).
REVOKE ALL ON FUNCTION iam_memberships_of(uuid), iam_session_tenant(uuid), iam_refresh_tenant(bytea),
    iam_user_session_tenants(uuid), iam_revoked_sessions_since(timestamptz), iam_custom_roles(),
    iam_tenant_closure_insert(), iam_tenant_closure_move()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION iam_memberships_of(uuid), iam_session_tenant(uuid),
    iam_refresh_tenant(bytea), iam_user_session_tenants(uuid),
    iam_revoked_sessions_since(timestamptz), iam_custom_roles()
    TO iam_service;

-- The refresh hot path in one call, which finds the session by the token alone; migration 7's
-- function, now also refusing (without spending the token) while the session's tenant is
-- blocked: outcome 'blocked'.
CREATE OR REPLACE FUNCTION iam_refresh_session(
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
SECURITY DEFINER
SET search_path = public, pg_temp
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
                          AND sessions.revoked_at IS NULL
                          AND NOT iam_tenant_blocked(sessions.tenant_id))
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
        -- Live, unexpired, of a live family, yet not spent: its tenant is blocked. Nothing is
        -- spent, so the token works again once the block is lifted.
        IF EXISTS (SELECT 1 FROM sessions s
                    WHERE s.id = family AND iam_tenant_blocked(s.tenant_id)) THEN
            outcome := 'blocked';
            RETURN NEXT;
            RETURN;
        END IF;
        -- Live and unexpired: it appeared after the spend's snapshot. Try once more.
    END LOOP;
    outcome := 'unknown';
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION iam_refresh_session(bytea, bytea, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION iam_refresh_session(bytea, bytea, timestamptz, timestamptz)
    TO iam_service;
