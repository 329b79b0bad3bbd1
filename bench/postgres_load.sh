#!/usr/bin/env bash
# Load throughput of the postgres sink vs `psql \copy` of the same file into an identical
# table (same columns, defaults and index), on loopback.
#   bench/postgres_load.sh [ROWS] [ROUNDS]      (defaults: 1000000 rows, 3 rounds)
# Needs PostgreSQL (CDRSYNC_TEST_POSTGRES_URL, e.g. postgres://postgres@127.0.0.1:55432/postgres;
# see CONTRIBUTING.md). Both replace the same day each round (DELETE the day, then COPY, in
# one transaction), alternating. Prints min/median/max seconds and rows/s for both.
# PROFILE=debug uses the debug build of the test (the client only streams the file).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CDRSYNC_TEST_POSTGRES_URL:?set CDRSYNC_TEST_POSTGRES_URL, e.g. postgres://postgres@127.0.0.1:55432/postgres}"
rows=${1:-1000000}; rounds=${2:-3}
psql=${CDRSYNC_TEST_PSQL:-/usr/lib/postgresql/15/bin/psql}
profile_flag=--release; [ "${PROFILE:-release}" = debug ] && profile_flag=
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cols='"CallId","StartTime","EndTime","Duration","AgentName","QueueName","Disposition","CallDirection","extra_columns"'
# The merged day: 8 configured columns and extra_columns, quoted cells with commas.
awk -v n="$rows" 'BEGIN {
  print "CallId,StartTime,EndTime,Duration,AgentName,QueueName,Disposition,CallDirection,extra_columns"
  for (i = 0; i < n; i++) {
    s = i % 86400; h = int(s / 3600); m = int(s % 3600 / 60); x = s % 60
    printf "call-%08d,2024-05-15T%02d:%02d:%02dZ,2024-05-15T%02d:%02d:%02dZ,%d,\"Smith, Jo %d\",Queue %d,Resolved,%s,\"{\"\"Skill\"\":\"\"s%d\"\"}\"\n",
      i, h, m, x, h, m, x, i % 3600, i % 500, i % 40, (i % 2 ? "Inbound" : "Outbound"), i % 7
  }
}' > "$tmp/day.csv"
schema="bench_$$"
"$psql" -X -q "$CDRSYNC_TEST_POSTGRES_URL" -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema"
cargo test $profile_flag -q -p cdrsync --test postgres_sink --no-run 2>/dev/null
sink() {
  CDRSYNC_BENCH_FILE="$tmp/day.csv" CDRSYNC_BENCH_ROWS="$rows" CDRSYNC_BENCH_TABLE="$schema.cdr" \
    cargo test $profile_flag -q -p cdrsync --test postgres_sink -- --ignored --exact bench_load_one_day \
    --nocapture 2>/dev/null | sed -n 's/^bench seconds=//p'
}
baseline() {
  local t0 t1
  t0=$(date +%s.%N)
  PGOPTIONS="-c cdrsync.cdr_date=2024-05-15 -c cdrsync.request_id=bench" "$psql" -X -q -1 \
    "$CDRSYNC_TEST_POSTGRES_URL" -c "DELETE FROM $schema.base WHERE cdr_date = '2024-05-15'" \
    -c "\\copy $schema.base ($cols) from '$tmp/day.csv' csv header"
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
sink > "$tmp/sink.txt"   # creates the table; its first round counts
"$psql" -X -q "$CDRSYNC_TEST_POSTGRES_URL" -c "CREATE TABLE $schema.base (LIKE $schema.cdr INCLUDING ALL)"
baseline > "$tmp/psql.txt"
for _ in $(seq 2 "$rounds"); do sink >> "$tmp/sink.txt"; baseline >> "$tmp/psql.txt"; done
stats() { sort -n | awk -v n="$rows" '{a[NR]=$1} END {printf "min %.2f s  median %.2f s  max %.2f s  (median %.0f rows/s)\n", a[1], a[int((NR+1)/2)], a[NR], n/a[int((NR+1)/2)]}'; }
echo "postgres sink (COPY straight into the table): $(stats < "$tmp/sink.txt")"
echo "psql \\copy into an identical table:           $(stats < "$tmp/psql.txt")"
"$psql" -X -q "$CDRSYNC_TEST_POSTGRES_URL" -c "SET client_min_messages = warning; DROP SCHEMA $schema CASCADE"
