-- The application's privileges: reading and writing the pipeline's tables, nothing else (no
-- DDL, no other schema, no writes to the migrations table). They are held by a group role that
-- cannot log in; the login role the consumer and compactor use — its name and password live in
-- a Secrets Manager secret, and a multi-user rotation adds a clone of it — is made a member at
-- start-up (service_kit::postgres::grant_application_role), so no migration needs to know who
-- logs in. Tables later migrations create get the same grants through default privileges of
-- the role that runs the migrations (the schema owner).
--
-- Roles belong to the cluster while migrations run per database (and under a per-database lock),
-- so two databases migrating at once may both try to create it: the loser finds it there.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analytics_writer') THEN
        CREATE ROLE analytics_writer NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO analytics_writer;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO analytics_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO analytics_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO analytics_writer;
-- The application reads which migrations are applied (to skip the migrator when none is
-- missing) but never records one.
REVOKE INSERT, UPDATE, DELETE ON _sqlx_migrations FROM analytics_writer;
