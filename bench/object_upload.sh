#!/usr/bin/env bash
# Upload throughput of the object sink vs a plain PUT, against moto on loopback.
#   bench/object_upload.sh [MB] [ROUNDS]      (defaults: 200 MB, 3 rounds)
# Needs moto running (CDRSYNC_TEST_S3_ENDPOINT, e.g. http://127.0.0.1:5000; see
# CONTRIBUTING.md). Prints min/median/max seconds and MB/s for both.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CDRSYNC_TEST_S3_ENDPOINT:?set CDRSYNC_TEST_S3_ENDPOINT to moto, e.g. http://127.0.0.1:5000}"
mb=${1:-200}; rounds=${2:-3}
profile_flag=--release; [ "${PROFILE:-release}" = debug ] && profile_flag=
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
head -c $((mb << 20)) /dev/urandom > "$tmp/day.csv"
# moto refuses unsigned requests (403): the baseline PUT is signed like the sink's, with
# moto's test credentials, and must succeed (-f).
sign=(--aws-sigv4 "aws:amz:us-east-1:s3" --user test:test -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
curl -sf "${sign[@]}" -X PUT "$CDRSYNC_TEST_S3_ENDPOINT/cdrsync-bench" >/dev/null || true
cargo test $profile_flag -q -p cdrsync --test object_sink --no-run 2>/dev/null
stats() { sort -n | awk -v mb="$mb" '{a[NR]=$1} END {printf "min %.2f s  median %.2f s  max %.2f s  (median %.0f MB/s)\n", a[1], a[int((NR+1)/2)], a[NR], mb/a[int((NR+1)/2)]}'; }
for _ in $(seq "$rounds"); do
  CDRSYNC_BENCH_FILE="$tmp/day.csv" cargo test $profile_flag -q -p cdrsync --test object_sink \
    -- --ignored --exact bench_publish_one_file --nocapture 2>/dev/null | sed -n 's/^bench seconds=//p'
done | stats | sed 's/^/sink (multipart, 8 MiB parts, 4 at a time): /'
for _ in $(seq "$rounds"); do
  curl -sf "${sign[@]}" -o /dev/null -w '%{time_total}\n' -T "$tmp/day.csv" "$CDRSYNC_TEST_S3_ENDPOINT/cdrsync-bench/plain-put.csv"
done | stats | sed 's/^/curl, one signed PUT:                        /'
