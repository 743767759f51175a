DROP TABLE tenant_selections;
