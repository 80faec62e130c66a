-- The services' own roles, applied with psql as the administrator `analytics`, who owns everything and
-- runs the migrations: in the managed PostgreSQL by its `roles` container on every start (there the
-- administrator is the image's POSTGRES_USER, a superuser); on a CloudNativePG cluster by the roles Job,
-- against the primary (there the administrator owns both databases and may create roles, nothing more).
-- Idempotent: it creates what is missing and sets every password and privilege again, so it also upgrades
-- a cluster made before the roles existed, and a changed password takes effect on the next start.
--
--   command   reads and writes the write database; cannot connect to the read database
--   consumer  reads and writes the read database; cannot connect to the write database
--   query     reads the read database; cannot connect to the write database
--
-- None of them may change the schema (migrations run as the administrator), and tables that later
-- migrations create get the same privileges through default privileges.
--
-- The passwords come from the environment (COMMAND_PASSWORD, CONSUMER_PASSWORD, QUERY_PASSWORD), read
-- with \getenv (psql 15 and later), so that they never appear on a command line.
\set ON_ERROR_STOP on
\getenv command_password COMMAND_PASSWORD
\getenv consumer_password CONSUMER_PASSWORD
\getenv query_password QUERY_PASSWORD

select format('create role %I', name)
  from unnest(array['command', 'consumer', 'query']) as name
 where not exists (select from pg_roles where rolname = name)
\gexec

alter role command with login nocreatedb nocreaterole noinherit password :'command_password';
alter role consumer with login nocreatedb nocreaterole noinherit password :'consumer_password';
alter role query with login nocreatedb nocreaterole noinherit password :'query_password';

-- A superuser administrator (the managed mode's) also makes sure that none of them is one. Under
-- CloudNativePG the administrator only has CREATEROLE, which may not name the attribute at all; a role it
-- created is not a superuser, and only a superuser could have made it one.
select rolsuper as administrator_is_superuser from pg_roles where rolname = current_user \gset
\if :administrator_is_superuser
alter role command nosuperuser;
alter role consumer nosuperuser;
alter role query nosuperuser;
\endif

revoke all on database analytics_write from public;
revoke all on database analytics_read from public;
grant connect on database analytics_write to command;
grant connect on database analytics_read to consumer, query;

-- In each database: default privileges first, then the grants on what exists, after every transaction
-- that was already running has ended. The services' migrations may run at the same moment (on a
-- CloudNativePG cluster the roles Job and the migrate init containers start together): a table created
-- after the default privileges gets them; one created before is in a transaction that had its id by
-- then, which `wait_for_older_transactions` waits out (as CREATE INDEX CONCURRENTLY does), so that the
-- grant on all tables sees it. Either way no table is left without its grants.
-- A transaction left open for a minute (idle in transaction, say) is not waited for longer: the grants
-- go on, with a warning.
\set wait_for_older_transactions 'do $$ begin perform set_config(''roles.since'', pg_current_xact_id()::text, false); end $$; do $$ declare waited int := 0; begin while pg_snapshot_xmin(pg_current_snapshot()) <= current_setting(''roles.since'')::xid8 loop if waited >= 600 then raise warning ''a transaction older than the default privileges is still open after 60 s; granting without it''; exit; end if; perform pg_sleep(0.1); waited := waited + 1; end loop; end $$;'

\connect analytics_write
revoke create on schema public from public;
grant usage on schema public to command;
alter default privileges in schema public grant select, insert, update, delete on tables to command;
alter default privileges in schema public grant usage, select, update on sequences to command;
:wait_for_older_transactions
grant select, insert, update, delete on all tables in schema public to command;
grant usage, select, update on all sequences in schema public to command;

\connect analytics_read
revoke create on schema public from public;
grant usage on schema public to consumer, query;
alter default privileges in schema public grant select, insert, update, delete on tables to consumer;
alter default privileges in schema public grant usage, select, update on sequences to consumer;
alter default privileges in schema public grant select on tables to query;
:wait_for_older_transactions
grant select, insert, update, delete on all tables in schema public to consumer;
grant usage, select, update on all sequences in schema public to consumer;
grant select on all tables in schema public to query;
