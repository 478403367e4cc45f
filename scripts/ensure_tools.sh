#!/usr/bin/env bash
# Make sure the deployment tools the tests use are installed: `promtool` (from Debian's
# `prometheus` package), `docker-compose` (Debian's v1.29) and `systemd-analyze` (Debian's
# `systemd`, to verify the unit in deploy/systemd). Reuses whatever is already on PATH;
# installs only what is missing. Needs root only when it has to install.
set -euo pipefail

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "ensure_tools: promtool, docker-compose and systemd-analyze already installed"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "ensure_tools: missing ${missing[*]} and not root: install them yourself" >&2
    exit 1
fi

echo "ensure_tools: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
apt-get update -q >/dev/null
# policy-rc.d 101 keeps the prometheus package from starting its own server (no service
# is wanted here: the tests only need promtool). Removed again on exit if we made it.
POLICY=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod +x "$POLICY"
    made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then rm -f "$POLICY"; fi; }
trap cleanup EXIT
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null

for tool in promtool docker-compose systemd-analyze; do
    command -v "$tool" >/dev/null 2>&1 || { echo "ensure_tools: $tool still missing" >&2; exit 1; }
done
echo "ensure_tools: $(promtool --version 2>&1 | head -n1)"
echo "ensure_tools: $(docker-compose version --short 2>&1)"
echo "ensure_tools: $(systemd-analyze --version 2>&1 | head -n1)"
