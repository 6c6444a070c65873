#!/bin/sh
# The runs behind docs/performance.md. Bounded: every run has --duration and a viewer count;
# loopback only. Results: bench/results/*.json (one `sfu bench --json` or floor output per run).
#   sh bench/perf_runs.sh [gcm|cm80 ...]
# Series per SRTP profile:
#   floor-P-{before,after,sendto,gso8}   the C floor (bench/floor.c): per-datagram sendmmsg of 64,
#                                        one sendto per packet, GSO with 8 packets per message
#   scale-P-N          1 publisher, 3-layer simulcast 2.5 Mbit/s + audio, N viewers (1 .. 1000)
#   scalelow-P-N       the same at 300 kbit/s top layer, so the load tool keeps up at 1000 viewers
#                      (cost against out-packets, RSS per viewer between 100 and 1000)
#   publishers-P-10    10 publishers, no viewers: RSS per stream
#   storm-P-1000       1000 viewers joining over 10 s, media within 15 s (stormlow: 300 kbit/s top layer;
#                      stormnoguard: the overload guard off, --overload-queue-delay-ms 0)
# Latency (pinned: server on CPU 0, load tool on CPU 1, so it is not the tool's contention):
#   pin-P-N[-paced]    1 stream, N viewers, frames back to back or paced 2.5x (as a browser)
#   pinmulti-P-N       10 streams, N viewers spread over them, paced
set -u
cd "$(dirname "$0")/.."
OUT=bench/results
mkdir -p "$OUT"
SFU=".venv/bin/sfu"
make -s -C bench floor
MEDIA="--simulcast q,h,f --bitrate 2500000 --fps 30"
LOW="--simulcast q,h,f --bitrate 300000 --fps 30"
run() {  # name, args...
  name=$1
  shift
  $SFU bench --spawn --quiet --json "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
}
for P in ${*:-gcm cm80}; do
  ./bench/floor "$P" 300000 64 > "$OUT/floor-$P-before.json"
  ./bench/floor "$P" 300000 1 > "$OUT/floor-$P-sendto.json"
  ./bench/floor "$P" 300000 64 8 > "$OUT/floor-$P-gso8.json"
  for N in 1 10 100 200 500 1000; do
    RAMP=$(( N / 100 + 1 ))
    run "scale-$P-$N" --viewers $N --ramp $RAMP --duration 10 --procs 2 --srtp "$P" $MEDIA
  done
  for N in 100 500 1000; do
    RAMP=$(( N / 100 + 1 ))
    run "scalelow-$P-$N" --viewers $N --ramp $RAMP --duration 10 --procs 2 --srtp "$P" $LOW
  done
  ./bench/floor "$P" 300000 64 > "$OUT/floor-$P-after.json"
  run "publishers-$P-10" --viewers 0 --publishers 10 --duration 5 --srtp "$P" $MEDIA
  run "storm-$P-1000" --viewers 1000 --ramp 10 --settle 5 --duration 5 --procs 2 --srtp "$P" $MEDIA \
    --join-deadline 15
  run "stormlow-$P-1000" --viewers 1000 --ramp 10 --settle 5 --duration 5 --procs 2 --srtp "$P" $LOW \
    --join-deadline 15
  run "stormnoguard-$P-1000" --viewers 1000 --ramp 10 --settle 5 --duration 5 --procs 2 --srtp "$P" $MEDIA \
    --join-deadline 15 --server-args "--overload-queue-delay-ms 0"
  for N in 50 100 200; do
    sh bench/pinned.sh "$OUT/pin-$P-$N.json" --viewers $N --ramp 2 --duration 10 --procs 1 --srtp "$P" $MEDIA
    sh bench/pinned.sh "$OUT/pin-$P-$N-paced.json" --viewers $N --ramp 2 --duration 10 --procs 1 --srtp "$P" \
      $MEDIA --pacing 2.5
  done
  sh bench/pinned.sh "$OUT/pinmulti-$P-200.json" --publishers 10 --viewers 200 --ramp 2 --duration 10 --procs 1 \
    --srtp "$P" $MEDIA --pacing 2.5
done
