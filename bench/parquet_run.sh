#!/usr/bin/env bash
# `cdrsync run` of one simulated day published as CSV vs as Parquet (a `dir` sink with
# file_format = "parquet", typed Duration int and StartTime timestamp), in the same run:
# wall time over ROUNDS rounds each (min/median/max, rounds interleaved), peak RSS
# (/usr/bin/time -v) and the published file's size. Each round starts from a fresh state.
#
#   bench/parquet_run.sh                 # 1 M rows, 3 rounds
#   ROWS=200000 ROUNDS=1 bench/parquet_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18091}
DATE=2024-05-15
cargo build --release --quiet -p cdrsync -p cxone-sim
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
sim_pid=
trap '[ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null; rm -rf "$work"' EXIT

cat >"$work/scenario.toml" <<TOML
rows_per_day = $ROWS
rows_per_part = 50000
pending_ms = 0
processing_ms = 50
TOML
$bin/cxone-sim --listen 127.0.0.1:$PORT --scenario "$work/scenario.toml" >"$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 100); do grep -q listening "$work/sim.log" && break; sleep 0.1; done
base="http://127.0.0.1:$PORT"

# Runs one round of `format` (csv | parquet); appends "seconds rss_kb bytes" to $work/$format.
round() {
  local format=$1 d="$work/$1-round"
  rm -rf "$d"; mkdir -p "$d/secrets"
  printf demo-secret >"$d/secrets/client_secret"; chmod 600 "$d/secrets/client_secret"
  cat >"$d/cdrsync.toml" <<TOML
[cxone]
base_url = "$base"
client_id = "demo-client"
client_secret = "file:./secrets/client_secret"
refresh_token = "file:./secrets/refresh_token"
[job]
types = { Duration = "int", StartTime = "timestamp" }
critical = ["CallId", "StartTime"]
[poll]
initial = "50ms"
max = "200ms"
[sink]
kind = "dir"
path = "./out"
file_format = "$format"
[state]
url = "sqlite://./state.db"
TOML
  /usr/bin/time -v -o "$d/time" $bin/cdrsync run --config "$d/cdrsync.toml" --date $DATE >"$d/out.log" 2>&1 \
    || { echo "cdrsync run ($format) failed:"; cat "$d/out.log"; exit 1; }
  local secs rss bytes
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$d/time")
  rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$d/time")
  bytes=$(stat -c %s "$d/out/callDetailRecords/date=$DATE/cdr.$format")
  echo "$secs $rss $bytes" >>"$work/$format"
}

for _ in $(seq "$ROUNDS"); do round csv; round parquet; done

printf '%-8s %-8s %8s %8s %8s %12s %14s\n' rows format "min s" "median s" "max s" "peak RSS" "file bytes"
for format in csv parquet; do
  sort -n "$work/$format" | awk -v rows="$ROWS" -v f="$format" '
    { s[NR]=$1; if ($2>rss) rss=$2; bytes=$3 }
    END { printf "%-8s %-8s %8.2f %8.2f %8.2f %9d MB %14d\n", rows, f, s[1], s[int((NR+1)/2)], s[NR], rss/1024, bytes }'
done
