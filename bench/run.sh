#!/usr/bin/env bash
# Throughput and peak memory of `cdrsync run` for a 1 M- and a 5 M-row day from the simulator,
# beside a baseline in the same run: curl each part | tee part | openssl dgst -sha256,
# then `tail -n +2` to merge. Prints one table; numbers go into issue notes.
#
#   bench/run.sh            # 1M and 5M rows
#   ROWS="200000" bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-"1000000 5000000"}
PORT=${PORT:-18089}
cargo build --release --quiet --bin cdrsync --bin cxone-sim
bin=target/release
work=$(mktemp -d)
trap 'kill $sim_pid 2>/dev/null || true; rm -rf "$work"' EXIT

printf '%-9s %-10s %10s %10s %10s %12s\n' rows tool seconds "MB/s" "peak RSS" bytes
for rows in $ROWS; do
  # A fresh simulator per size, parts of 50 000 rows (the platform default).
  $bin/cxone-sim --listen 127.0.0.1:$PORT --rows-per-day "$rows" --rows-per-part 50000 >"$work/sim.log" 2>&1 &
  sim_pid=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/api/v2/oauth/token" -o /dev/null -d x=1 2>/dev/null && break; curl -s "http://127.0.0.1:$PORT/" -o /dev/null && break; sleep 0.1; done
  base="http://127.0.0.1:$PORT"

  # --- cdrsync
  d="$work/cdrsync-$rows"; mkdir -p "$d/secrets"
  printf demo-secret >"$d/secrets/client_secret"; chmod 600 "$d/secrets/client_secret"
  cat >"$d/cdrsync.toml" <<TOML
[cxone]
base_url = "$base"
client_id = "demo-client"
client_secret = "file:./secrets/client_secret"
refresh_token = "file:./secrets/refresh_token"
[poll]
initial = "50ms"
max = "200ms"
[sink]
kind = "dir"
path = "./out"
[state]
url = "sqlite://./state.db"
TOML
  /usr/bin/time -v -o "$d/time" $bin/cdrsync run --config "$d/cdrsync.toml" --date 2024-05-15 >"$d/out.log" 2>&1
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$d/time")
  rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$d/time")
  bytes=$(jq '[.parts[].bytes]|add' "$d/out/callDetailRecords/date=2024-05-15/_manifest.json")
  printf '%-9s %-10s %10.2f %10.1f %8d MB %12d\n' "$rows" cdrsync "$secs" "$(echo "$bytes/$secs/1000000" | bc -l)" $((rss/1024)) "$bytes"

  # --- baseline: token, create, poll, then curl | tee | openssl per part, tail -n +2 merge
  b="$work/base-$rows"; mkdir -p "$b"
  cat >"$b/baseline.sh" <<SH
set -euo pipefail
tok=\$(curl -sf -d grant_type=client_credentials -d client_id=demo-client -d client_secret=demo-secret -d 'scope=offline' $base/api/v2/oauth/token | jq -r .access_token)
body='{"reportType":"callDetailRecords","reportId":"default","fromDate":"2024-05-15T00:00:00.000Z","toDate":"2024-05-15T23:59:59.999Z","format":"csv","columns":["CallId","StartTime","EndTime","Duration","AgentName","QueueName","Disposition","CallDirection","CustomerNumber","AgentNumber"]}'
id=\$(curl -sf -H "Authorization: Bearer \$tok" -H 'Content-Type: application/json' -H "X-Request-Id: \$(cat /proc/sys/kernel/random/uuid)" -d "\$body" $base/api/v2/data/download/requests | jq -r .id)
while :; do
  s=\$(curl -sf -H "Authorization: Bearer \$tok" $base/api/v2/data/download/requests/\$id)
  [ "\$(echo "\$s" | jq -r .status)" = COMPLETED ] && [ "\$(echo "\$s" | jq '.files|length')" -gt 0 ] && break
  sleep 0.05
done
i=0
for u in \$(echo "\$s" | jq -r '.files[].downloadUrl'); do
  i=\$((i+1))
  curl -sf -H "Authorization: Bearer \$tok" "$base\$u" | tee "$b/part\$i.csv" | openssl dgst -sha256 >/dev/null
done
head -n 1 "$b/part1.csv" >"$b/merged.csv"
for f in \$(ls "$b"/part*.csv | sort -V); do tail -n +2 "\$f" >>"$b/merged.csv"; done
SH
  /usr/bin/time -v -o "$b/time" bash "$b/baseline.sh"
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$b/time")
  rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$b/time")
  bytes=$(cat "$b"/part*.csv | wc -c)
  printf '%-9s %-10s %10.2f %10.1f %8d MB %12d\n' "$rows" baseline "$secs" "$(echo "$bytes/$secs/1000000" | bc -l)" $((rss/1024)) "$bytes"
  kill $sim_pid; wait $sim_pid 2>/dev/null || true
  rm -rf "$d/out" "$b"/part*.csv "$b/merged.csv"
done
