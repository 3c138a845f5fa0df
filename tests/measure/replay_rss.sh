#!/usr/bin/env bash
# Peak RSS of a process replaying a spool file of SIZE_MIB MiB (default 256).
#
# usage: tests/measure/replay_rss.sh LOAD_BINARY [SIZE_MIB] [RUNS]
#
# LOAD_BINARY is a release build of the `load` example
# (`cargo build --release --example load`, then target/release/examples/load). Each run is
# `load --spans 0` (it only replays the spool) under /usr/bin/time; RUNS runs (default 1) are
# made one after another on the same spool, as short-lived processes would, and each run's
# peak RSS and the rows the server received so far are printed.
set -euo pipefail
LOAD=$1
SIZE=${2:-256}
RUNS=${3:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/tb-replay-rss.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
python3 "$HERE/make_spool.py" "$WORK/spool" "$SIZE"
python3 "$HERE/fake_braintrust.py" "$PORT" "$WORK/ids" &
SERVER=$!
sleep 1
for run in $(seq 1 "$RUNS"); do
  BRAINTRUST_API_KEY=sk-measure BRAINTRUST_APP_URL="http://127.0.0.1:$PORT" \
    BRAINTRUST_SPOOL_DIR="$WORK/spool" BRAINTRUST_PROJECT=measure \
    /usr/bin/time -v "$LOAD" --spans 0 >"$WORK/out" 2>"$WORK/err" || true
  RSS=$(grep "Maximum resident set size" "$WORK/err" | awk '{print $NF}')
  WALL=$(grep "Elapsed (wall clock)" "$WORK/err" | awk '{print $NF}')
  STATS=$(curl -s "http://127.0.0.1:$PORT/__stats")
  LEFT=$(du -sb "$WORK/spool" | cut -f1)
  echo "run=$run peak_rss_kib=$RSS wall=$WALL $(tail -1 "$WORK/out") server=$STATS spool_bytes_left=$LEFT"
done
