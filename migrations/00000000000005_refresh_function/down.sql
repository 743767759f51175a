DROP FUNCTION iam_refresh_session(bytea, bytea, timestamptz, timestamptz);
