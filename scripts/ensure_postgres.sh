#!/usr/bin/env bash
# Make sure the PostgreSQL the tests also run against answers (start the local cluster if it
# is installed but down). Fails loudly: the PostgreSQL half of the suite is never skipped.
set -euo pipefail
url=${TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if command -v pg_isready >/dev/null && ready; then exit 0; fi
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  for version in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  for _ in $(seq 1 50); do ready && exit 0; sleep 0.2; done
fi
echo "PostgreSQL for the tests is not reachable at $url (set TEST_DATABASE_URL)" >&2
exit 1
