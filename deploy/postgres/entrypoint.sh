#!/bin/sh
# First start on an empty PGDATA: initdb with POSTGRES_USER / POSTGRES_PASSWORD (or the file
# POSTGRES_PASSWORD_FILE names), password authentication for every host, POSTGRES_DB
# created, then the scripts of /docker-entrypoint-initdb.d (*.sh, run with a server on the
# Unix socket only, as the public image does). Then the server, as PID 1 of the container,
# listening on every address.
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ -z "${POSTGRES_PASSWORD:-}" ] && [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
fi

if [ "${1:-postgres}" != postgres ]; then
    exec "$@"
fi
shift || true

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres-entrypoint: POSTGRES_PASSWORD must be set for a new database" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --pgdata="$PGDATA" --username="$user" --pwfile="$pwfile" --encoding=UTF8 \
        --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        # single-user mode: no server is listening while the database is made
        echo "CREATE DATABASE \"$db\"" | postgres --single -D "$PGDATA" -j postgres >/dev/null
    fi
    found=0
    for script in /docker-entrypoint-initdb.d/*.sh; do
        [ -f "$script" ] || continue
        if [ "$found" = 0 ]; then
            pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
            found=1
        fi
        echo "postgres-entrypoint: running $script"
        POSTGRES_USER=$user POSTGRES_DB=$db PGUSER=$user PGDATABASE=$db sh "$script"
    done
    if [ "$found" = 1 ]; then
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
    echo "postgres-entrypoint: created a new database cluster in $PGDATA (user $user, database $db)"
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
