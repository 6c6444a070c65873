#!/bin/sh
# The Cython targets (srtp, router, twcc, keyframe) against a fast path built with AddressSanitizer:
# an out-of-bounds access or use-after-free in the C code then aborts with a report, even where it
# changes no output. Builds a copy of sfu/ and fuzz/ under build/asan/ (the regular .so is left
# alone), then runs fuzz/run.py there with libasan preloaded; its arguments are run.py's:
#     sh fuzz/asan.sh --runs 0 --work DIR    # replay a corpus grown by a normal run (DIR/<target>/)
#     sh fuzz/asan.sh --seconds 60           # mutate the seeds for a minute
# gcc's libasan provides the sanitizer-coverage symbols atheris would use, so under it libFuzzer gets
# no coverage at all (atheris warns; run.py shows cov "-"): mutation here is blind, which is why the
# first form, replaying what a coverage-guided run found, is the useful one. Crash inputs land in
# build/asan/fuzz/crashes/<target>/ (copy them to fuzz/crashes/ once fixed). Needs gcc's libasan.
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/build/asan"
rm -rf "$out"
mkdir -p "$out"
cp -r "$root/sfu" "$root/fuzz" "$root/setup.py" "$root/pyproject.toml" "$root/README.md" "$out/"
rm -f "$out"/sfu/_fastpath*.so "$out/sfu/_fastpath.c"
(cd "$out" && CFLAGS="-fsanitize=address -fno-omit-frame-pointer" LDFLAGS="-fsanitize=address" \
	"$root/.venv/bin/python" setup.py -q build_ext --inplace)
LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
	exec "$root/.venv/bin/python" "$out/fuzz/run.py" "$@" srtp router twcc keyframe
