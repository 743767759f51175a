//! Diesel's view of the tables that `migrations/` creates; keep the two in step.

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Text,
        display_name -> Text,
        password_hash -> Nullable<Text>,
        status -> Text,
        email_verified -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        metadata -> Jsonb,
    }
}

diesel::table! {
    tenants (id) {
        id -> Uuid,
        name -> Text,
        parent_id -> Nullable<Uuid>,
        owner_id -> Uuid,
        status -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        metadata -> Jsonb,
    }
}

diesel::table! {
    memberships (tenant_id, user_id) {
        tenant_id -> Uuid,
        user_id -> Uuid,
        roles -> Array<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    sessions (id) {
        id -> Uuid,
        user_id -> Uuid,
        tenant_id -> Uuid,
        amr -> Array<Text>,
        auth_time -> Timestamptz,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Bytea,
        session_id -> Uuid,
        status -> Text,
        issued_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        sealed_private_key -> Bytea,
        created_at -> Timestamptz,
        retired_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    mfa_enrolments (user_id) {
        user_id -> Uuid,
        sealed_secret -> Bytea,
        created_at -> Timestamptz,
        confirmed_at -> Nullable<Timestamptz>,
        last_used_step -> Nullable<BigInt>,
    }
}

diesel::table! {
    recovery_codes (user_id, lookup) {
        user_id -> Uuid,
        lookup -> Text,
        hash -> Text,
        created_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    mfa_challenges (token_hash) {
        token_hash -> Bytea,
        user_id -> Uuid,
        tenant_id -> Uuid,
        amr -> Array<Text>,
        expires_at -> Timestamptz,
        attempts -> Integer,
    }
}

diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::allow_tables_to_appear_in_same_query!(refresh_tokens, sessions);
diesel::joinable!(memberships -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(memberships, users);

diesel::table! {
    throttle_counters (key) {
        key -> Text,
        score -> Double,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    link_tokens (hash) {
        hash -> Bytea,
        kind -> Text,
        email -> Text,
        user_id -> Nullable<Uuid>,
        tenant_id -> Nullable<Uuid>,
        roles -> Array<Text>,
        invited_by -> Nullable<Uuid>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    mail_outbox (id) {
        id -> Uuid,
        recipient -> Text,
        subject -> Text,
        body_text -> Text,
        body_html -> Text,
        created_at -> Timestamptz,
        due_at -> Timestamptz,
        attempts -> Integer,
        sent_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    roles (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        name -> Text,
        description -> Text,
        permissions -> Array<Text>,
        named_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    permissions (name) {
        name -> Text,
        description -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    platform (singleton) {
        singleton -> Bool,
        root_tenant_id -> Uuid,
    }
}

diesel::table! {
    audit_events (id) {
        seq -> BigInt,
        id -> Uuid,
        at -> Timestamptz,
        actor_user_id -> Nullable<Uuid>,
        actor_kind -> Text,
        tenant_id -> Uuid,
        action -> Text,
        target -> Text,
        request_id -> Nullable<Text>,
        outcome -> Text,
    }
}

diesel::table! {
    claim_definitions (name) {
        name -> Text,
        scope_tenant_id -> Nullable<Uuid>,
        descendants -> Bool,
        source -> Text,
        constant_value -> Nullable<Jsonb>,
        field -> Nullable<Text>,
        hook_url -> Nullable<Text>,
        hook_timeout_ms -> Nullable<Integer>,
        hook_on_failure -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    tenant_selections (token_hash) {
        token_hash -> Bytea,
        user_id -> Uuid,
        amr -> Array<Text>,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    tenant_closure (ancestor_id, descendant_id) {
        ancestor_id -> Uuid,
        descendant_id -> Uuid,
        depth -> Int4,
    }
}
diesel::allow_tables_to_appear_in_same_query!(tenant_closure, tenants);
