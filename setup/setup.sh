#!/usr/bin/env bash
# `make setup`: everything the suite needs that pip does not install. Idempotent and quick
# when nothing is missing. Reads setup/apt.txt (system programs) and setup/npm.txt (npm folders).
#   setup/setup.sh          the system programs, then every npm folder not marked on-demand
#   setup/setup.sh npm DIR  npm ci in DIR alone (a folder installed on its first use: the
#                           load-generator comparison installs sobranie_bench/loadgen so)
set -euo pipefail
cd "$(dirname "$0")/.."

npm_ci() {
  local dir="$1" stamp="$1/node_modules/.installed"
  if [[ ! -f "${stamp}" || "${dir}/package-lock.json" -nt "${stamp}" ]]; then
    command -v npm >/dev/null || { echo "setup: npm not found; run: sudo apt-get install -y nodejs npm" >&2; exit 1; }
    echo "setup: npm ci in ${dir}"
    # no package downloads a browser of its own (puppeteer-core, and artillery's playwright):
    # the suite drives Debian's Chromium and Firefox; the variables make sure nothing does
    (cd "${dir}" && PUPPETEER_SKIP_DOWNLOAD=1 PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    touch "${stamp}"
  fi
}

if [[ "${1:-}" == npm ]]; then
  npm_ci "${2:?usage: setup/setup.sh npm DIR}"
  exit 0
fi

missing=()
while read -r cmd pkg _; do
  [[ -z "${cmd}" || "${cmd}" == \#* ]] && continue
  command -v "${cmd}" >/dev/null 2>&1 || [[ -x "/usr/sbin/${cmd}" ]] || missing+=("${pkg}")
done < setup/apt.txt

if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

while read -r dir when _; do
  [[ -z "${dir}" || "${dir}" == \#* || "${when}" == on-demand ]] && continue
  npm_ci "${dir}"
done < setup/npm.txt
