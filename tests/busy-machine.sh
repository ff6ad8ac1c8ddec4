#!/usr/bin/env bash
# Runs the README's test command N times in a row with a CPU hog on one
# core beside it (a developer's or a user's machine is busy too), prints
# pass or fail per run with its wall time and each failing test's name,
# and exits non-zero if any run failed.
#
#   tests/busy-machine.sh [N]        (default 10)
#
# The hog is a shell busy loop pinned to the last CPU (taskset, where
# installed), or `stress-ng --cpu 1` where that is installed. Each run's
# whole output is kept in target/busy-machine/run-K.log.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-10}
case "$runs" in
    ''|*[!0-9]*) echo "usage: $0 [N]   (N: how many runs, a positive number)" >&2; exit 2 ;;
esac
[ "$runs" -ge 1 ] || { echo "usage: $0 [N]   (N >= 1)" >&2; exit 2; }

logs=target/busy-machine
mkdir -p "$logs"

last_cpu=$(( $(nproc) - 1 ))
if command -v stress-ng >/dev/null; then
    stress-ng --cpu 1 --quiet &
    hog_what="stress-ng --cpu 1"
elif command -v taskset >/dev/null; then
    taskset -c "$last_cpu" sh -c 'while :; do :; done' &
    hog_what="a busy loop on cpu $last_cpu"
else
    sh -c 'while :; do :; done' &
    hog_what="a busy loop"
fi
hog=$!
trap 'kill "$hog" 2>/dev/null; wait "$hog" 2>/dev/null' EXIT
echo "busy-machine: $runs runs of 'cargo test --workspace --release' beside $hog_what"

# Build first (not timed as a run; the runs then only link what changed).
cargo test --workspace --release --no-run >"$logs/build.log" 2>&1 || {
    echo "busy-machine: the build failed (see $logs/build.log)" >&2
    exit 1
}

failed_runs=0
for k in $(seq 1 "$runs"); do
    log="$logs/run-$k.log"
    start=$(date +%s)
    cargo test --workspace --release >"$log" 2>&1
    status=$?
    secs=$(( $(date +%s) - start ))
    if [ "$status" -eq 0 ]; then
        echo "run $k: pass ($secs s)"
    else
        failed_runs=$((failed_runs + 1))
        names=$(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -e 's/^test //' -e 's/ \.\.\. FAILED$//' | sort -u | tr '\n' ' ')
        echo "run $k: FAIL ($secs s, exit $status): ${names:-no test named: see $log}"
    fi
done
echo "busy-machine: $((runs - failed_runs)) of $runs runs passed"
[ "$failed_runs" -eq 0 ]
