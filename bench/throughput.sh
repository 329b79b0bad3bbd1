#!/usr/bin/env bash
# Whole-process throughput of `cdrsync run` beside the shell pipeline a user would write,
# in ONE run, rounds alternating (issue 11):
#   1. uncapped, ROWS_LIST (default 1 M and 10 M rows) in PARTS parts (default 4): cdrsync
#      (job.concurrency = 4) vs the baseline — token, create, poll, then per part
#      `curl | tee part | openssl dgst -sha256`, then `head -1; tail -n +2` to merge;
#   2. each connection capped at CAP bytes/s (default 5 MB/s), CAPPED_ROWS rows (default
#      200 000) in PARTS parts: cdrsync and the baseline, parallel (concurrency 4; the
#      baseline's curls in the background) and sequential (concurrency 1; one curl after
#      the other). Ratios are against the sequential baseline.
# The simulator serves pre-generated parts from memory (`serve_from_memory`), so it is
# not the bottleneck: the script measures curl on a part first and prints its speed.
# Reports min/median/max seconds of ROUNDS rounds (default 3), median MB/s (part bytes /
# wall time), peak RSS (/usr/bin/time -v) and the load average before and after.
#
#   bench/throughput.sh
#   ROWS_LIST="1000000" ROUNDS=1 CAPPED_ROWS=0 bench/throughput.sh   # CAPPED_ROWS=0 skips 2
#   BIN=/tmp/old-build bench/throughput.sh   # binaries from a folder, no build (before/after)
# 10 M rows stage ~1.6 GB of parts plus the merged day: check `df` first.
# Ports: PORT (default 18210) and PORT+1. Release builds, run under `nice`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS_LIST=${ROWS_LIST:-"1000000 10000000"}
CAPPED_ROWS=${CAPPED_ROWS:-200000}
PARTS=${PARTS:-4}
ROUNDS=${ROUNDS:-3}
CAP=${CAP:-5000000}
PORT=${PORT:-18210}
DATE=2024-05-15
# BIN=dir takes cdrsync and cxone-sim from dir (e.g. a copy of an older build) unbuilt.
if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  nice cargo build --release --quiet -p cdrsync -p cxone-sim
  bin=${CARGO_TARGET_DIR:-target}/release
fi
work=$(mktemp -d)
sim_pid=
# Waits for the simulator to exit, so a run started right after this one finds its port free.
trap 'rc=$?; [ -n "$sim_pid" ] && { kill "$sim_pid" || true; wait "$sim_pid" || true; } 2>/dev/null; rm -rf "$work"; exit $rc' EXIT

# Starts a simulator on $1 serving $2 rows in $PARTS parts, capped at $3 bytes/s (0: none).
start_sim() {
  local port=$1 rows=$2 cap=$3
  [ -n "$sim_pid" ] && { kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; }
  {
    echo "rows_per_day = $rows"
    echo "rows_per_part = $(( (rows + PARTS - 1) / PARTS ))"
    echo "pending_ms = 0"
    echo "processing_ms = 0"
    echo "serve_from_memory = true"
    [ "$cap" -gt 0 ] && printf '[faults]\nbandwidth_bytes_per_sec = %d\n' "$cap"
  } >"$work/scenario.toml"
  $bin/cxone-sim --listen 127.0.0.1:$port --scenario "$work/scenario.toml" >"$work/sim.log" 2>&1 &
  sim_pid=$!
  for _ in $(seq 100); do grep -q listening "$work/sim.log" && break; sleep 0.1; done
  grep -q listening "$work/sim.log" || { echo "the simulator did not start on port $port:"; cat "$work/sim.log"; exit 1; }
  base="http://127.0.0.1:$port"
}

# curl's speed on part 1 of the day (the simulator must not be the bottleneck).
curl_speed() {
  local tok id url
  tok=$(curl -sf -d grant_type=client_credentials -d client_id=demo-client -d client_secret=demo-secret -d scope=offline "$base/api/v2/oauth/token" | jq -r .access_token)
  id=$(curl -sf -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' -H 'X-Request-Id: baseline-0' \
    -d "$BODY" "$base/api/v2/data/download/requests" | jq -r '.id // .requestId')
  url=$(curl -sf -H "Authorization: Bearer $tok" "$base/api/v2/data/download/requests/$id" | jq -r '.files[0].downloadUrl')
  curl -s -o /dev/null -H "Authorization: Bearer $tok" -w '%{speed_download}' "$base$url" | awk '{printf "%.2f GB/s", $1/1e9}'
}
BODY='{"reportType":"callDetailRecords","reportId":"default","fromDate":"2024-05-15T00:00:00.000Z","toDate":"2024-05-15T23:59:59.999Z","format":"csv","columns":["CallId","StartTime","EndTime","Duration","AgentName","QueueName","Disposition","CallDirection","CustomerNumber","AgentNumber"]}'

seconds() { awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$1"; }
rss_kb() { awk -F': ' '/Maximum resident set size/{print $2}' "$1"; }

# One `cdrsync run` from a fresh state; appends "seconds rss_kb bytes" to $work/$1.
cdrsync_round() {
  local label=$1 concurrency=$2 d="$work/cdrsync"
  rm -rf "$d"; mkdir -p "$d/secrets"
  printf demo-secret >"$d/secrets/client_secret"; chmod 600 "$d/secrets/client_secret"
  cat >"$d/cdrsync.toml" <<TOML
[cxone]
base_url = "$base"
client_id = "demo-client"
client_secret = "file:./secrets/client_secret"
refresh_token = "file:./secrets/refresh_token"
[job]
concurrency = $concurrency
[poll]
initial = "20ms"
max = "50ms"
[sink]
kind = "dir"
path = "./out"
[state]
url = "sqlite://./state.db"
TOML
  /usr/bin/time -v -o "$d/time" $bin/cdrsync run --config "$d/cdrsync.toml" --date $DATE >"$d/out.log" 2>&1 \
    || { echo "cdrsync run failed:"; tail -20 "$d/out.log"; exit 1; }
  local bytes
  bytes=$(jq '[.parts[].bytes]|add' "$d/out/callDetailRecords/date=$DATE/_manifest.json")
  echo "$(seconds "$d/time") $(rss_kb "$d/time") $bytes" >>"$work/$label"
  rm -rf "$d"
}

# The baseline script: parallel (1) runs the part pipelines in the background.
cat >"$work/baseline.sh" <<'SH'
set -euo pipefail
base=$1 out=$2 parallel=$3
tok=$(curl -sf -d grant_type=client_credentials -d client_id=demo-client -d client_secret=demo-secret -d scope=offline "$base/api/v2/oauth/token" | jq -r .access_token)
body='{"reportType":"callDetailRecords","reportId":"default","fromDate":"2024-05-15T00:00:00.000Z","toDate":"2024-05-15T23:59:59.999Z","format":"csv","columns":["CallId","StartTime","EndTime","Duration","AgentName","QueueName","Disposition","CallDirection","CustomerNumber","AgentNumber"]}'
id=$(curl -sf -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' -H "X-Request-Id: baseline-$parallel" -d "$body" "$base/api/v2/data/download/requests" | jq -r '.id // .requestId')
while :; do
  s=$(curl -sf -H "Authorization: Bearer $tok" "$base/api/v2/data/download/requests/$id")
  [ "$(echo "$s" | jq -r .status)" = COMPLETED ] && [ "$(echo "$s" | jq '.files|length')" -gt 0 ] && break
  sleep 0.02
done
i=0
for u in $(echo "$s" | jq -r '.files[].downloadUrl'); do
  i=$((i+1))
  if [ "$parallel" = 1 ]; then
    curl -sf -H "Authorization: Bearer $tok" "$base$u" | tee "$out/part$i.csv" | openssl dgst -sha256 >/dev/null &
  else
    curl -sf -H "Authorization: Bearer $tok" "$base$u" | tee "$out/part$i.csv" | openssl dgst -sha256 >/dev/null
  fi
done
wait
head -n 1 "$out/part1.csv" >"$out/merged.csv"
for f in $(ls "$out"/part*.csv | sort -V); do tail -n +2 "$f" >>"$out/merged.csv"; done
SH

# One baseline run; appends "seconds rss_kb bytes" to $work/$1.
baseline_round() {
  local label=$1 parallel=$2 b="$work/base"
  rm -rf "$b"; mkdir -p "$b"
  /usr/bin/time -v -o "$work/base.time" bash "$work/baseline.sh" "$base" "$b" "$parallel"
  local bytes
  bytes=$(cat "$b"/part*.csv | wc -c)
  echo "$(seconds "$work/base.time") $(rss_kb "$work/base.time") $bytes" >>"$work/$label"
  rm -rf "$b"
}

# "rows label" lines, in print order; the reference (ratio 1.00) of each block first.
rows_of() { echo "$1" >"$work/$2.rows"; }
summary() {
  local ref=$1; shift
  local ref_median
  ref_median=$(sort -n "$work/$ref" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  for label in "$ref" "$@"; do
    sort -n "$work/$label" | awk -v rows="$(cat "$work/$label.rows")" -v l="$label" -v ref="$ref_median" '
      { s[NR]=$1; if ($2>rss) rss=$2; bytes=$3 }
      END { m=s[int((NR+1)/2)]; printf "%-9s %-28s %7.2f %7.2f %7.2f %8.0f %6.2fx %6d MB\n", rows, l, s[1], m, s[NR], bytes/m/1e6, ref/m, rss/1024 }'
  done
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for rows in $ROWS_LIST; do
  start_sim $PORT "$rows" 0
  cdrsync_round warmup 4   # creates the request and fills the simulator's memory
  echo "rows $rows: the simulator serves a part to curl at $(curl_speed)"
  for _ in $(seq "$ROUNDS"); do
    baseline_round "baseline-$rows" 0
    cdrsync_round "cdrsync-$rows" 4
  done
  rows_of "$rows" "baseline-$rows"; rows_of "$rows" "cdrsync-$rows"
done
if [ "$CAPPED_ROWS" -gt 0 ]; then
  start_sim $((PORT + 1)) "$CAPPED_ROWS" "$CAP"
  cdrsync_round warmup 4
  for _ in $(seq "$ROUNDS"); do
    baseline_round capped-baseline-seq 0
    baseline_round capped-baseline-par 1
    cdrsync_round capped-cdrsync-seq 1
    cdrsync_round capped-cdrsync-par 4
  done
  for l in capped-baseline-seq capped-baseline-par capped-cdrsync-seq capped-cdrsync-par; do rows_of "$CAPPED_ROWS" "$l"; done
fi
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '%-9s %-28s %7s %7s %7s %8s %7s %9s\n' rows "run ($ROUNDS rounds)" "min s" "med s" "max s" "MB/s" "ratio" "peak RSS"
for rows in $ROWS_LIST; do summary "baseline-$rows" "cdrsync-$rows"; done
if [ "$CAPPED_ROWS" -gt 0 ]; then
  echo "(capped at $CAP bytes/s per connection, $PARTS parts; ratio vs the sequential baseline)"
  summary capped-baseline-seq capped-baseline-par capped-cdrsync-seq capped-cdrsync-par
fi
