#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard's browser test
# (test/server/dashboard-browser.test.ts drives it with playwright-core, which
# downloads no browser).
#
#   scripts/chromium.sh install   installs chromium from Debian if it is missing (needs root)
set -euo pipefail

log() { printf 'chromium.sh: %s\n' "$*" >&2; }

install() {
  if [ -x /usr/bin/chromium ]; then return 0; fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "chromium is not installed and this is not a root Debian machine: install the Debian package chromium, or set SPILLWAY_SKIP_BROWSER=1 to skip the browser test"
    exit 1
  fi
  log "installing chromium from Debian (about 100 MB)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q chromium >/dev/null
}

case "${1:-}" in
  install) install ;;
  *)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
