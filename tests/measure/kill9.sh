#!/usr/bin/env bash
# kill -9 at random moments during a burst with the server down, then restart with the
# server up: every row that was written to the spool must arrive.
#
# usage: tests/measure/kill9.sh LOAD_BINARY [POINTS] [SPANS]
#
# For each of POINTS kill points (default 10): a fresh spool directory; `load --spans SPANS
# --threads 2` (default 20000 spans) runs against a port where nothing listens and is
# killed with SIGKILL after a random delay (0.5 to 6 s); the ids of every whole row then in
# the spool's files are noted; the fake server starts and `load --spans 0` runs until the
# spool holds no segment (at most 5 runs). Prints, per point, the rows found in the spool,
# how many of them arrived, how many arrived twice, and the runs it took.
set -euo pipefail
LOAD=$1
POINTS=${2:-10}
SPANS=${3:-20000}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/tb-kill9.XXXXXX)
SERVER=
trap 'if [ -n "$SERVER" ]; then kill $SERVER 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
ids_in_spool() {
  python3 - "$1" <<'PY'
import json, os, sys
d = sys.argv[1]
for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
    if not name.startswith("spool-"):
        continue
    with open(os.path.join(d, name), "rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                print(row.get("id"))
PY
}
FAILED=0
for point in $(seq 1 "$POINTS"); do
  PORT=$((20000 + RANDOM % 20000))
  SPOOL="$WORK/spool-$point"
  ENV=(BRAINTRUST_API_KEY=sk-measure "BRAINTRUST_APP_URL=http://127.0.0.1:$PORT"
       "BRAINTRUST_SPOOL_DIR=$SPOOL" BRAINTRUST_PROJECT=measure)
  DELAY=$(python3 -c "import random; print(round(random.uniform(0.5, 6.0), 2))")
  env "${ENV[@]}" "$LOAD" --spans "$SPANS" --threads 2 >/dev/null 2>"$WORK/first-$point.err" &
  FIRST=$!
  sleep "$DELAY"
  kill -9 "$FIRST" 2>/dev/null || true
  wait "$FIRST" 2>/dev/null || true
  ids_in_spool "$SPOOL" | sort >"$WORK/spooled-$point"
  python3 "$HERE/fake_braintrust.py" "$PORT" "$WORK/ids-$point" &
  SERVER=$!
  sleep 1
  RUNS=0
  while [ "$RUNS" -lt 5 ]; do
    RUNS=$((RUNS + 1))
    env "${ENV[@]}" "$LOAD" --spans 0 >/dev/null 2>>"$WORK/next-$point.err" || true
    if ! ls "$SPOOL" 2>/dev/null | grep -q '^spool-'; then break; fi
  done
  curl -s "http://127.0.0.1:$PORT/__stats" >/dev/null
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
  sort "$WORK/ids-$point" >"$WORK/arrived-$point"
  SPOOLED=$(wc -l <"$WORK/spooled-$point")
  MISSING=$(comm -23 "$WORK/spooled-$point" <(sort -u "$WORK/arrived-$point") | wc -l)
  TWICE=$(uniq -d "$WORK/arrived-$point" | wc -l)
  LEFT=$(ls "$SPOOL" 2>/dev/null | grep -c '^spool-' || true)
  echo "point=$point kill_after_s=$DELAY spooled=$SPOOLED arrived=$((SPOOLED - MISSING)) missing=$MISSING duplicates=$TWICE restarts=$RUNS segments_left=$LEFT"
  if [ "$MISSING" -ne 0 ]; then FAILED=1; fi
done
exit $FAILED
