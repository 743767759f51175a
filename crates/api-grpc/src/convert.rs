//! Parsing requests into domain values and building responses.

use iam_domain::{TenantId, Timestamp, User, UserId, UserStatus};
use tonic::Status;

use crate::pb;
use crate::status::invalid;

/// Parses a required UUID field.
pub fn tenant_id(field: &str, value: &str) -> Result<TenantId, Status> {
    value.parse().map_err(|_| invalid(field, "must be a UUID"))
}

/// Parses a required UUID field.
pub fn user_id(field: &str, value: &str) -> Result<UserId, Status> {
    value.parse().map_err(|_| invalid(field, "must be a UUID"))
}

fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The wire form of a user status.
pub fn status_to_pb(s: UserStatus) -> pb::UserStatus {
    match s {
        UserStatus::Active => pb::UserStatus::Active,
        UserStatus::Disabled => pb::UserStatus::Disabled,
        UserStatus::Deleted => pb::UserStatus::Deleted,
    }
}

/// A user status from the wire; `None` for unspecified.
pub fn status_from_pb(field: &str, raw: i32) -> Result<Option<UserStatus>, Status> {
    match pb::UserStatus::try_from(raw) {
        Ok(pb::UserStatus::Unspecified) => Ok(None),
        Ok(pb::UserStatus::Active) => Ok(Some(UserStatus::Active)),
        Ok(pb::UserStatus::Disabled) => Ok(Some(UserStatus::Disabled)),
        Ok(pb::UserStatus::Deleted) => Ok(Some(UserStatus::Deleted)),
        Err(_) => Err(invalid(field, "unknown status")),
    }
}

/// The wire form of a user.
pub fn user(u: &User) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        email: u.email.as_str().to_owned(),
        name: u.name.as_str().to_owned(),
        status: status_to_pb(u.status).into(),
        email_verified: u.email_verified,
        created_at: Some(timestamp(u.created_at)),
        updated_at: Some(timestamp(u.updated_at)),
        metadata: Some(json_to_struct(u.metadata.as_map())),
    }
}

/// A protobuf `Value` as JSON (a non-finite number becomes null: JSON has none).
pub fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

/// A protobuf `Struct` as a JSON object.
pub fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

/// The wire form of a timestamp.
pub fn ts(t: Timestamp) -> prost_types::Timestamp {
    timestamp(t)
}

/// The wire form of a role.
pub fn role(r: &iam_domain::Role) -> pb::Role {
    pb::Role {
        id: r.id.to_string(),
        tenant_id: r.tenant.to_string(),
        name: r.name.as_str().to_owned(),
        description: r.description.clone(),
        system: r.system.is_some(),
        permissions: r
            .permissions
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

/// Parses a required role id.
pub fn role_id(field: &str, value: &str) -> Result<iam_domain::RoleId, Status> {
    value.parse().map_err(|_| invalid(field, "must be a UUID"))
}

/// A JSON value as a protobuf `Value`.
pub fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a protobuf `Struct`.
pub fn json_to_struct(map: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}
