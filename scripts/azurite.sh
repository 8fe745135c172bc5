#!/usr/bin/env bash
# Starts or stops Azurite's blob service (from the project's npm dependencies)
# in memory on 127.0.0.1, for Spillway's tests and benchmarks.
#
#   scripts/azurite.sh start   prints the environment to use (eval-able) on success
#   scripts/azurite.sh stop    stops only the process this script started (by pid)
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
DIR=${SPILLWAY_AZURITE_DIR:-/tmp/spillway-azurite}
PORT=${SPILLWAY_AZURITE_PORT:-10000}
PIDFILE=$DIR/azurite.pid
# Azurite's well-known development account; not a secret.
ACCOUNT=devstoreaccount1
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

log() { printf 'azurite.sh: %s\n' "$*" >&2; }

stop() {
  [ -f "$PIDFILE" ] || return 0
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
}

start() {
  local bin=$HERE/node_modules/.bin/azurite-blob
  [ -x "$bin" ] || { log "azurite is not installed: run npm ci"; exit 1; }
  stop
  mkdir -p "$DIR"
  "$bin" --inMemoryPersistence --skipApiVersionCheck --disableProductStyleUrl --silent \
    --blobHost 127.0.0.1 --blobPort "$PORT" >"$DIR/azurite.log" 2>&1 &
  echo $! >"$PIDFILE"
  local end=$((SECONDS + 30))
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then log "azurite exited: $(tail -3 "$DIR/azurite.log")"; exit 1; fi
    if [ $SECONDS -ge $end ]; then log "timed out waiting for azurite on port $PORT"; stop; exit 1; fi
    sleep 0.2
  done
  echo "export AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=$ACCOUNT;AccountKey=$KEY;BlobEndpoint=http://127.0.0.1:$PORT/$ACCOUNT;'"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
