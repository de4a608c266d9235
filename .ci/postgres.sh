#!/usr/bin/env bash
# Install and start PostgreSQL from Debian's packages, with a hyarch user and database.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
fi
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q online; then
  pg_lsclusters -h | grep -q "^$ver main" || pg_createcluster "$ver" main >/dev/null
  pg_ctlcluster "$ver" main start
fi
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='hyarch'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE USER hyarch WITH PASSWORD 'hyarch' CREATEDB\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='hyarch'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE DATABASE hyarch OWNER hyarch\""
echo "PostgreSQL $ver is running on 127.0.0.1:5432"
