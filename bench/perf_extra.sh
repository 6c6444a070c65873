#!/bin/sh
# Extra runs for docs/performance.md: latency at a moderate load, the join storm with audio only
# (join capacity apart from forwarding load), and py-spy profiles of the server under load
# (--native needs py-spy to pause the process per sample: CPU shares are right, latency is not).
set -u
cd "$(dirname "$0")/.."
OUT=bench/results
SFU=".venv/bin/sfu"
MEDIA="--simulcast q,h,f --bitrate 2500000 --fps 30"
for P in gcm cm80; do
  $SFU bench --spawn --viewers 50 --ramp 2 --duration 10 --procs 2 --srtp $P $MEDIA --quiet --json \
    > "$OUT/lat-$P-50.json" 2> "$OUT/lat-$P-50.err"
done
$SFU bench --spawn --viewers 1000 --ramp 10 --settle 5 --duration 5 --procs 2 --srtp gcm --codec none \
  --join-deadline 15 --quiet --json > "$OUT/storm-audio-gcm-1000.json" 2> "$OUT/storm-audio-gcm-1000.err"
if [ -x .venv/bin/py-spy ]; then
  for P in gcm cm80; do
    $SFU bench --spawn --viewers 100 --ramp 2 --duration 14 --procs 2 --srtp $P $MEDIA --quiet --json \
      > "$OUT/profile-$P-100.json" 2> "$OUT/profile-$P-100.err" &
    BENCH=$!
    sleep 9
    SERVER=$(pgrep -P "$BENCH" -f "sfu serve" | head -1)
    [ -n "$SERVER" ] && .venv/bin/py-spy record --native -p "$SERVER" -d 8 -r 250 -f raw \
      -o "$OUT/profile-$P-100.txt" > /dev/null 2>&1
    wait "$BENCH"
  done
fi
