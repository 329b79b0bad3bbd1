#!/usr/bin/env bash
# The merge alone (cdr-normalise, no download, no hashing): a day of ROWS rows in 4 parts,
# CSV and NDJSON, merged ROUNDS times, alternating the base commit's build (old), this
# tree's build (new: parts handed over as files, which the CSV fast path maps, as cdrsync
# does), this tree with CSV parts as readers (read: copied into a buffer, as before the
# mapping) and this tree with the fast paths off (general). Prints min/median/max
# MB/s of input per variant, over wall time and over the merging thread's CPU time (which
# a loaded machine disturbs much less), the load average, and checks that every variant
# wrote byte-identical output.
#
#   bench/merge.sh                      # ROWS=1000000 ROUNDS=5 BASE=2c8aa97
#   ROWS=200000 ROUNDS=3 bench/merge.sh
set -euo pipefail

ROWS=${ROWS:-1000000}
ROUNDS=${ROUNDS:-5}
BASE=${BASE:-2c8aa97}
root=$(git rev-parse --show-toplevel)
target=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$root"
nice cargo build -q --release -p cdr-normalise --example merge_timing
new=$target/release/examples/merge_timing

# The baseline: the base commit's sources (unpacked, no git worktree), this example added.
mkdir -p "$work/base"
git archive "$BASE" | tar -x -C "$work/base"
sed '/GENERAL-ONLY-BEGIN/,/GENERAL-ONLY-END/c\
fn merge_general(_: \&Schema, _: Format, _: Vec<PartInput<'"'"'_>>, _: \&mut dyn Write) -> Result<u64, Box<dyn std::error::Error>> { Err("no general-only switch at the base".into()) }\
fn part_file(name: String, file: File) -> PartInput<'"'"'static> { PartInput::new(name, file) }' \
    crates/cdr-normalise/examples/merge_timing.rs >"$work/base/crates/cdr-normalise/examples/merge_timing.rs"
(cd "$work/base" && CARGO_TARGET_DIR=$target/bench-base nice cargo build -q --release --offline \
    -p cdr-normalise --example merge_timing)
old=$target/bench-base/release/examples/merge_timing

"$new" gen "$work/data" "$ROWS"
echo "input: $(du -sh "$work/data/csv" | cut -f1) CSV, $(du -sh "$work/data/ndjson" | cut -f1) NDJSON, $ROWS rows in 4 parts; $ROUNDS rounds"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

results=$work/results
# One timed merge of variant $2 (old, new, read, general) in format $1; its output is
# checked against the reference kept from the round's first variant.
one() {
    local fmt=$1 variant=$2 ext=$1 bin=$new arg=
    [ "$fmt" = json ] && ext=ndjson
    case $variant in
        old) bin=$old ;;
        read | general) arg=$variant ;;
    esac
    echo "$fmt $variant $("$bin" time "$work/data" "$fmt" $arg)" >>"$results"
    if [ -f "$work/data/reference.$ext" ]; then
        cmp -s "$work/data/reference.$ext" "$work/data/merged.$ext" ||
            { echo "round $round: $fmt output of $variant differs from the others" >&2; exit 1; }
    else
        mv "$work/data/merged.$ext" "$work/data/reference.$ext"
    fi
}
for round in $(seq "$ROUNDS"); do
    # The order turns each round, so that no variant always runs first (cold) or last.
    order=(old new read general)
    shift_by=$(((round - 1) % 4))
    order=("${order[@]:$shift_by}" "${order[@]:0:$shift_by}")
    for fmt in csv json; do
        rm -f "$work/data/reference."*
        for variant in "${order[@]}"; do
            # Parts as readers only matter for CSV (NDJSON reads them either way).
            [ "$fmt" = json ] && [ "$variant" = read ] && continue
            one "$fmt" "$variant"
        done
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "outputs: every variant byte-identical in every round; variants run in a turning order"
echo
printf '%-5s %-8s %8s %8s %8s   %8s %8s %8s   %s\n' format variant min median max min median max "(wall MB/s | CPU MB/s)"
# min median max of column $2 of the lines starting with $1.
stats() {
    grep "^$1 " "$results" | awk -v c="$2" '{ print $c }' | sort -g | awk '
        { v[NR] = $1 }
        END { printf "%8.0f %8.0f %8.0f", v[1], (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[NR] }'
}
for key in "csv old" "csv general" "csv read" "csv new" "json old" "json general" "json new"; do
    waited=$(grep "^$key " "$results" | awk '{ s += $7 } END { printf "%.1f", s }')
    printf '%-5s %-8s %s   %s   (waited for a CPU %s s in all)\n' $key "$(stats "$key" 3)" "$(stats "$key" 4)" "$waited"
done
