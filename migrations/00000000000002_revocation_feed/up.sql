-- Indexes for the revocation feed's snapshot, which every instance takes at start-up and after
-- each reconnect of its listener. Each covers only the rare rows the snapshot reads, so they stay
-- small and cost writes only when something is revoked or blocked.

-- Sessions revoked since a cutoff (the access-token lifetime).
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Users who are not active; most are.
CREATE INDEX users_inactive_idx ON users (id) WHERE status <> 'active';

-- The roots of the blocked subtrees; the descent from them uses tenants_parent_id_idx.
CREATE INDEX tenants_blocked_idx ON tenants (id) WHERE status = 'blocked';
