#!/bin/sh
# Run once, when PostgreSQL makes a new database (the public image and deploy/postgres both
# run /docker-entrypoint-initdb.d/*.sh then): the application's own role, which is no
# superuser and owns only its database, with the password the `secrets` service generated.
# The superuser may connect over the Unix socket only: its password is no way in.
set -eu
role=${POSTGRES_APP_USER:-taskmaster}
db=${POSTGRES_DB:-postgres}
password=$(cat "${POSTGRES_APP_PASSWORD_FILE:-/secrets/db-password}")

# the password goes through stdin, never a command line
psql -v ON_ERROR_STOP=1 -q --username "${POSTGRES_USER:-postgres}" --dbname "$db" <<SQL
CREATE ROLE "$role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$password';
ALTER DATABASE "$db" OWNER TO "$role";
ALTER SCHEMA public OWNER TO "$role";
SQL

# first match wins: the superuser is refused over TCP, whatever its password
hba="$PGDATA/pg_hba.conf"
{ printf 'host all "%s" all reject\n' "${POSTGRES_USER:-postgres}"; cat "$hba"; } > "$hba.new"
mv "$hba.new" "$hba"
echo "taskmaster-role: created role $role, owner of database $db"
