#!/usr/bin/env bash
# Make sure a Docker engine answers on the socket: reuse a running one, otherwise
# install docker.io (Debian) if needed and start dockerd in the background.
# Needs root only when it has to install or start the engine.
set -euo pipefail

SOCK="${DOCKER_SOCK:-/var/run/docker.sock}"
LOG="${DOCKERD_LOG:-/tmp/log-capturer-dockerd.log}"

engine_answers() {
    [ -S "$SOCK" ] && curl -fsS --max-time 5 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1
}

if engine_answers; then
    echo "ensure_docker: engine already running at $SOCK"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "ensure_docker: no engine at $SOCK and not root: start Docker yourself" >&2
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "ensure_docker: installing docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q docker.io >/dev/null
fi
command -v curl >/dev/null 2>&1 || { apt-get update -q >/dev/null; apt-get install -y -q curl >/dev/null; }

if [ -S "$SOCK" ] && ! pgrep -x dockerd >/dev/null; then
    rm -f "$SOCK"  # left by an engine that is gone
fi
if ! pgrep -x dockerd >/dev/null; then
    echo "ensure_docker: starting dockerd (log: $LOG)"
    nohup dockerd >"$LOG" 2>&1 </dev/null &
fi
for _ in $(seq 1 120); do
    if engine_answers; then
        echo "ensure_docker: engine ready at $SOCK"
        exit 0
    fi
    sleep 0.5
done
echo "ensure_docker: engine did not become ready; last log lines:" >&2
tail -n 30 "$LOG" >&2 || true
exit 1
