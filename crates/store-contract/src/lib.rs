//! The store contract: test cases that every adapter of the store ports must pass, so that the
//! in-memory store and PostgreSQL behave alike. Each adapter's integration tests invoke
//! [`store_contract_tests!`] with a fixture that yields a fresh, empty store.

use std::any::Any;
use std::sync::Arc;

use iam_ports::{KeyStore, MailQueue, RevocationFeed, Store, ThrottleStore};

pub mod cases;
pub mod fixtures;

/// A fresh, empty store and key store; `guard` keeps their backing resources (a test database)
/// alive for the test's duration.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub keys: Arc<dyn KeyStore>,
    pub feed: Arc<dyn RevocationFeed>,
    pub throttle: Arc<dyn ThrottleStore>,
    pub mail: Arc<dyn MailQueue>,
    pub guard: Box<dyn Any + Send>,
}

/// Generates one `#[tokio::test]` per contract case, each on a fresh fixture from `$fixture`
/// (an `async fn() -> Fixture`).
#[macro_export]
macro_rules! store_contract_tests {
    ($fixture:path) => {
        $crate::store_contract_tests!(@cases $fixture;
            users_round_trip,
            duplicate_email_conflicts,
            dropped_unit_rolls_back,
            explicit_rollback_discards,
            tenants_and_memberships,
            rotation_spends_the_presented_token,
            reuse_revokes_the_family,
            expired_and_unknown_tokens,
            rolled_back_rotation_leaves_token_live,
            concurrent_rotations_have_one_winner,
            revoking_a_session,
            key_rotation_retires_and_purges,
            users_update_and_list_by_tenant,
            tenant_status_and_ancestors,
            revoking_all_sessions_of_a_user,
            feed_publishes_committed_revocations_only,
            snapshot_reflects_revocations,
            mfa_enrolment_and_replay_guard,
            recovery_codes_are_single_use,
            mfa_challenges_cap_attempts_and_expire,
            throttle_counters_drain_grow_and_forget,
            throttle_failures_add_up_under_concurrency,
            refresh_session_in_one_call,
            concurrent_refresh_sessions_have_one_winner,
            link_tokens_are_single_use_and_superseded,
            passwords_are_replaced,
            the_outbox_commits_with_the_unit_and_leases_claims,
            custom_roles_and_assignments,
            catalogue_root_tenant_and_metadata,
            audit_events_are_appended_and_paged,
            role_changes_reach_the_feed_and_snapshot,
            claims_and_sessions_of_refresh_tokens,
            hierarchy_deep_and_wide,
            moves_keep_the_tree_and_refuse_cycles,
            moves_and_deletions_reach_the_snapshot,
            tenant_updates_memberships_and_tenant_sessions,
        );
    };
    (@cases $fixture:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $fixture().await;
                $crate::cases::$case(&fixture).await;
            }
        )*
    };
}
