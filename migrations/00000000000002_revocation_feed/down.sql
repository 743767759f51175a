DROP INDEX tenants_blocked_idx;
DROP INDEX users_inactive_idx;
DROP INDEX sessions_revoked_at_idx;
