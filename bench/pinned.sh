#!/bin/sh
# One `sfu bench` run with the server pinned to one CPU and the load tool to the other(s), so the
# server's latency is not the load tool's CPU contention. Bounded (the bench's --duration).
#   sh bench/pinned.sh OUT.json [sfu bench args...]      e.g. --viewers 100 --srtp gcm --pacing 2.5
# Environment: SERVER_CPU (default 0), TOOL_CPUS (default 1), SERVER_ARGS (extra `sfu serve` args).
set -eu
cd "$(dirname "$0")/.."
OUT=$1
shift
SERVER_CPU=${SERVER_CPU:-0}
TOOL_CPUS=${TOOL_CPUS:-1}
SECRET=$(.venv/bin/python -c "import secrets; print(secrets.token_urlsafe(32))")
PORTS=$(.venv/bin/python -c "
import socket
s = socket.socket(); s.bind(('127.0.0.1', 0)); u = socket.socket(type=socket.SOCK_DGRAM); u.bind(('127.0.0.1', 0))
print(s.getsockname()[1], u.getsockname()[1])")
HTTP=${PORTS% *}
UDP=${PORTS#* }
# shellcheck disable=SC2086
taskset -c "$SERVER_CPU" .venv/bin/sfu serve --http-host 127.0.0.1 --http-port "$HTTP" --udp-port "$UDP" \
  --public-ip 127.0.0.1 --token-secret="$SECRET" --log-level warning ${SERVER_ARGS:-} > /dev/null &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  .venv/bin/python -c "import socket; socket.create_connection(('127.0.0.1', $HTTP), 0.2)" 2>/dev/null && break
  sleep 0.1
done
TOKEN=$(.venv/bin/sfu token --stream '*' --publish --subscribe --secret="$SECRET")
taskset -c "$TOOL_CPUS" .venv/bin/sfu bench --whip "http://127.0.0.1:$HTTP/whip/bench-{i}" \
  --whep "http://127.0.0.1:$HTTP/whep/bench-{i}" --token "$TOKEN" --server-pid "$SERVER" \
  --quiet --json "$@" > "$OUT"
