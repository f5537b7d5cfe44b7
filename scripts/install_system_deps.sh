#!/usr/bin/env bash
# System packages the test suite uses for real: headless Chromium (the UI test drives Debian's /usr/bin/chromium
# through Playwright; no browser is ever downloaded), a font for it to draw text with, PostgreSQL server binaries
# (the instance-storage test starts a throw-away server with initdb/pg_ctl) and unshare (the disk-full and
# read-only tests mount a tmpfs in a private mount namespace). Installs from Debian what is missing; does nothing
# when everything is there.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || need+=(chromium)
if ! command -v fc-list >/dev/null 2>&1 || [ -z "$(fc-list 2>/dev/null | head -n 1)" ]; then
  need+=(fonts-dejavu-core)
fi
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing system packages: ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "error: need root (or sudo) to apt-get install ${need[*]}; install them yourself and re-run" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# Another apt process (unattended upgrades, a parallel job) may hold the lock for a while: wait, do not fail.
APT_OPTS=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
$SUDO apt-get "${APT_OPTS[@]}" update -qq
$SUDO apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "installed: ${need[*]}"
