#!/bin/sh
# The runs behind docs/performance.md. Bounded: every run has --duration and a viewer count;
# loopback only. Results: bench/results/*.json (one `sfu bench --json` or floor output per run).
#   sh bench/perf_runs.sh [gcm|cm80 ...]
set -u
cd "$(dirname "$0")/.."
OUT=bench/results
mkdir -p "$OUT"
SFU=".venv/bin/sfu"
make -s -C bench floor
MEDIA="--simulcast q,h,f --bitrate 2500000 --fps 30"
for P in ${*:-gcm cm80}; do
  ./bench/floor "$P" 300000 64 > "$OUT/floor-$P-before.json"
  ./bench/floor "$P" 300000 1 > "$OUT/floor-$P-sendto.json"
  for N in 1 10 100 200 300 500; do
    RAMP=$(( N / 50 + 1 ))
    $SFU bench --spawn --viewers $N --ramp $RAMP --duration 10 --procs 2 --srtp $P $MEDIA --quiet --json \
      > "$OUT/scale-$P-$N.json" 2> "$OUT/scale-$P-$N.err"
  done
  ./bench/floor "$P" 300000 64 > "$OUT/floor-$P-after.json"
  $SFU bench --spawn --viewers 0 --publishers 10 --duration 5 --srtp $P $MEDIA --quiet --json \
    > "$OUT/publishers-$P-10.json" 2> "$OUT/publishers-$P-10.err"
  $SFU bench --spawn --viewers 1000 --ramp 10 --settle 5 --duration 5 --procs 2 --srtp $P $MEDIA \
    --join-deadline 15 --quiet --json > "$OUT/storm-$P-1000.json" 2> "$OUT/storm-$P-1000.err"
done
