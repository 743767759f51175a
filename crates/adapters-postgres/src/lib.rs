//! The IAM store ports on PostgreSQL (diesel-async + deadpool).
