DROP TABLE mail_outbox;
DROP TABLE link_tokens;
