DROP FUNCTION iam_custom_roles();
DROP FUNCTION iam_revoked_sessions_since(timestamptz);
DROP FUNCTION iam_user_session_tenants(uuid);
DROP FUNCTION iam_refresh_tenant(bytea);
DROP FUNCTION iam_session_tenant(uuid);
DROP FUNCTION iam_memberships_of(uuid);
DROP POLICY definer_access ON memberships;
DROP POLICY tenant_isolation ON memberships;
ALTER TABLE memberships NO FORCE ROW LEVEL SECURITY;
ALTER TABLE memberships DISABLE ROW LEVEL SECURITY;
DROP POLICY definer_access ON roles;
DROP POLICY tenant_isolation ON roles;
ALTER TABLE roles NO FORCE ROW LEVEL SECURITY;
ALTER TABLE roles DISABLE ROW LEVEL SECURITY;
DROP POLICY definer_access ON sessions;
DROP POLICY tenant_isolation ON sessions;
ALTER TABLE sessions NO FORCE ROW LEVEL SECURITY;
ALTER TABLE sessions DISABLE ROW LEVEL SECURITY;
DROP POLICY definer_access ON refresh_tokens;
DROP POLICY tenant_isolation ON refresh_tokens;
ALTER TABLE refresh_tokens NO FORCE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens DISABLE ROW LEVEL SECURITY;
DROP POLICY definer_access ON audit_events;
DROP POLICY tenant_isolation ON audit_events;
ALTER TABLE audit_events NO FORCE ROW LEVEL SECURITY;
ALTER TABLE audit_events DISABLE ROW LEVEL SECURITY;

-- Migration 7's refresh function again (the blocked check used iam_tenant_blocked).
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

GRANT EXECUTE ON FUNCTION iam_refresh_session(bytea, bytea, timestamptz, timestamptz) TO PUBLIC;
GRANT EXECUTE ON FUNCTION iam_tenant_closure_insert(), iam_tenant_closure_move() TO PUBLIC;
ALTER FUNCTION iam_tenant_closure_insert() SECURITY INVOKER RESET search_path;
ALTER FUNCTION iam_tenant_closure_move() SECURITY INVOKER RESET search_path;
DROP FUNCTION iam_tenant_blocked(uuid);
DROP FUNCTION iam_current_tenant();
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM iam_service;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM iam_service;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM iam_service;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM iam_service;
REVOKE USAGE ON SCHEMA public FROM iam_service;
