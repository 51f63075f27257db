#!/usr/bin/env bash
# Make sure the real servers the tests and the demo start are on this machine:
# redis-server and mosquitto (with their clients), chromium for the
# dashboard's browser test, docker-compose to validate the compose file (no
# engine needed), promtool and amtool (Prometheus' and Alertmanager's config
# checkers), from the distribution's packages.
set -euo pipefail

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have redis-server || missing+=(redis-server redis-tools)
have mosquitto || missing+=(mosquitto)
have mosquitto_pub || missing+=(mosquitto-clients)
have chromium || missing+=(chromium)  # the dashboard's headless-browser test
have docker-compose || missing+=(docker-compose)  # validates docker-compose.yml offline
have promtool || missing+=(prometheus)  # promtool lints /metrics and the alert rules
have amtool || missing+=(prometheus-alertmanager)  # amtool checks config/alertmanager.yml
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)

[ ${#missing[@]} -eq 0 ] && exit 0

echo "liqmon: installing ${missing[*]} from the distribution's packages" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "liqmon: no apt-get here; install ${missing[*]} with your package manager, then run make again" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "liqmon: need root (or sudo) to install ${missing[*]}; install them, then run make again" >&2
    exit 1
  fi
fi
# Package installs must not start system services on the default ports.
export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
# Another make (or the machine's own updates) may hold dpkg's lock: wait for it.
lock=(-o DPkg::Lock::Timeout=600)
$sudo apt-get "${lock[@]}" update -qq
$sudo apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "liqmon: installed ${missing[*]}" >&2
