#!/bin/sh
# Start PostgreSQL on PGDATA, initialising it first when empty, with the official image's
# variables: POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required), POSTGRES_DB.
set -eu
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (the official image needs it too)}"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  # Other containers connect over the compose network, with the password.
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    echo "CREATE DATABASE \"$db\" OWNER \"$user\";" | postgres --single -D "$PGDATA" -j postgres >/dev/null
  fi
  echo "postgres-entrypoint: initialised $PGDATA (user $user, database $db)"
fi
# jit=off: the image leaves LLVM's files out (docker/dpkg-slim.cfg); the platform's queries
# are far too small for JIT anyway.
exec postgres -D "$PGDATA" -c listen_addresses='*' -c jit=off -k /tmp "$@"
