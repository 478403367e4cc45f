#!/usr/bin/env bash
# Make sure Podman (Debian's `podman`, 4.3 on bookworm) is installed for the Podman
# engine tests, and that this host lets `podman run` start containers: in a sandbox
# that refuses Podman's default rlimits ("error setting rlimits ... operation not
# permitted"), /etc/containers/containers.conf needs `default_ulimits = []` under
# `[containers]`. That is host setup, written here for the tests, never by the product.
# Reuses what is there; needs root only when it has to install or write the setting.
set -euo pipefail

if ! command -v podman >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "ensure_podman: podman missing and not root: install it yourself" >&2
        exit 1
    fi
    echo "ensure_podman: installing podman"
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends podman >/dev/null
fi

CONF=/etc/containers/containers.conf
if [ "$(id -u)" = 0 ] && ! grep -qE '^[[:space:]]*default_ulimits[[:space:]]*=' "$CONF" 2>/dev/null; then
    mkdir -p "$(dirname "$CONF")"
    if grep -q '^\[containers\]' "$CONF" 2>/dev/null; then
        sed -i 's/^\[containers\]$/[containers]\ndefault_ulimits = []/' "$CONF"
    else
        printf '[containers]\ndefault_ulimits = []\n' >>"$CONF"
    fi
    echo "ensure_podman: wrote default_ulimits = [] to $CONF"
fi
echo "ensure_podman: $(podman --version)"
