#!/usr/bin/env bash
# Starts or stops a throwaway single-node Ceph cluster with a RADOS gateway
# (S3) on 127.0.0.1, for Spillway's tests and benchmarks.
#
#   scripts/rgw.sh install installs Ceph from Debian if it is missing (needs root)
#   scripts/rgw.sh start   installs if needed, starts, and prints the environment
#                          to use (eval-able) on success
#   scripts/rgw.sh stop    stops only the daemons this script started (by pid)
#
# Everything lives under $SPILLWAY_RGW_DIR (default /tmp/spillway-rgw): one
# monitor with authentication off, one OSD on memstore (data in RAM), pools of
# size 1, radosgw's beast frontend. The settings below are the ones that make
# it start in seconds and answer without 40 ms Nagle delays.
set -euo pipefail

DIR=${SPILLWAY_RGW_DIR:-/tmp/spillway-rgw}
PORT=${SPILLWAY_RGW_PORT:-7480}
MON_PORT=${SPILLWAY_RGW_MON_PORT:-6789}
ACCESS_KEY=spillway-test-access
SECRET_KEY=spillway-test-secret-0123456789abcdef
CONF=$DIR/ceph.conf

log() { printf 'rgw.sh: %s\n' "$*" >&2; }

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

stop_one() { # name
  local f=$DIR/run/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  if pid_alive "$pid"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do pid_alive "$pid" || break; sleep 0.1; done
    pid_alive "$pid" && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop() {
  # radosgw first: it holds client sessions to the OSD and the monitor.
  stop_one rgw
  stop_one osd
  stop_one mon
}

wait_for() { # seconds description command...
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then log "timed out after ${secs}s waiting for $what"; return 1; fi
    sleep 0.2
  done
}

PACKAGES="ceph-mon ceph-osd radosgw ceph-common"

installed() {
  local bin
  for bin in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool; do
    command -v "$bin" >/dev/null || return 1
  done
}

install() {
  installed && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "Ceph is not installed and this is not a root Debian machine: install the Debian packages $PACKAGES"
    exit 1
  fi
  log "installing $PACKAGES from Debian (about 70 MB)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -q $PACKAGES >/dev/null
}

start() {
  install
  stop
  rm -rf "$DIR"
  mkdir -p "$DIR"/{run,log,mon,osd}
  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$CONF" <<CONF
[global]
fsid = $fsid
mon host = 127.0.0.1:$MON_PORT
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
ms mon client mode = crc
ms bind ipv4 = true
ms bind ipv6 = false
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
mon data = $DIR/mon/\$id
osd data = $DIR/osd/\$id
osd objectstore = memstore
memstore device bytes = 8589934592
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
paxos propose interval = 0.05
osd op num shards = 2
osd crush update on start = false
osd class update on start = false
osd op num threads per shard = 1
debug ms = 0
[client.rgw.spillway]
rgw frontends = beast endpoint=127.0.0.1:$PORT tcp_nodelay=1
rgw dns name = localhost
rgw thread pool size = 64
CONF
  monmaptool --create --clobber --fsid "$fsid" --addv a "[v1:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" >"$DIR/log/mkfs-mon.out" 2>&1
  ceph-mon -c "$CONF" -i a -f >"$DIR/log/mon.out" 2>&1 &
  echo $! >"$DIR/run/mon.pid"
  wait_for 30 "the monitor" ceph -c "$CONF" --connect-timeout 2 mon stat

  local uuid
  uuid=$(cat /proc/sys/kernel/random/uuid)
  ceph -c "$CONF" osd new "$uuid" >/dev/null
  ceph -c "$CONF" osd crush add-bucket localhost host >/dev/null 2>&1
  ceph -c "$CONF" osd crush move localhost root=default >/dev/null 2>&1
  ceph -c "$CONF" osd crush add osd.0 1.0 host=localhost >/dev/null 2>&1
  mkdir -p "$DIR/osd/0"
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$uuid" >"$DIR/log/mkfs-osd.out" 2>&1
  ceph-osd -c "$CONF" -i 0 -f >"$DIR/log/osd.out" 2>&1 &
  echo $! >"$DIR/run/osd.pid"
  wait_for 60 "the OSD to come up" bash -c "ceph -c '$CONF' osd stat | grep -q '1 up'"

  radosgw -c "$CONF" -n client.rgw.spillway -f >"$DIR/log/rgw.out" 2>&1 &
  echo $! >"$DIR/run/rgw.pid"
  wait_for 90 "radosgw on port $PORT" bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT"
  radosgw-admin -c "$CONF" user create --uid=spillway --display-name=spillway \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null
  cat <<ENV
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=us-east-1
export SPILLWAY_TEST_S3_ENDPOINT=http://127.0.0.1:$PORT
ENV
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
