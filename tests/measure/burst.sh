#!/usr/bin/env bash
# A burst of SPANS spans (default 200000) from the `load` example with a spool directory
# and spilling on, against the loopback fake server; then a second start that only replays.
#
# usage: tests/measure/burst.sh LOAD_BINARY [SPANS] [THREADS]
#
# Prints the burst's report line and peak RSS, the replay runs' lines (until the spool holds
# no segment, at most 20 runs), and how many distinct rows the server received in all.
set -euo pipefail
LOAD=$1
SPANS=${2:-200000}
THREADS=${3:-4}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/tb-burst.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
python3 "$HERE/fake_braintrust.py" "$PORT" "$WORK/ids" &
SERVER=$!
sleep 1
ENV=(BRAINTRUST_API_KEY=sk-measure "BRAINTRUST_APP_URL=http://127.0.0.1:$PORT"
     "BRAINTRUST_SPOOL_DIR=$WORK/spool" BRAINTRUST_PROJECT=measure)
env "${ENV[@]}" /usr/bin/time -v "$LOAD" --spans "$SPANS" --threads "$THREADS" --spill \
  >"$WORK/out" 2>"$WORK/err" || true
echo "burst: $(tail -1 "$WORK/out") peak_rss_kib=$(grep 'Maximum resident' "$WORK/err" | awk '{print $NF}')"
for run in $(seq 1 20); do
  if ! ls "$WORK/spool" 2>/dev/null | grep -q '^spool-'; then break; fi
  env "${ENV[@]}" /usr/bin/time -v "$LOAD" --spans 0 >"$WORK/out" 2>"$WORK/err" || true
  echo "replay $run: $(tail -1 "$WORK/out") peak_rss_kib=$(grep 'Maximum resident' "$WORK/err" | awk '{print $NF}')"
done
echo "server: $(curl -s "http://127.0.0.1:$PORT/__stats") segments_left=$(ls "$WORK/spool" 2>/dev/null | grep -c '^spool-' || true)"
