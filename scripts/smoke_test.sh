#!/usr/bin/env bash
# Soak test before a release: does the daemon leak, reuse connections, stay up, and
# deliver every line exactly once under steady load and container churn?
#
#   scripts/smoke_test.sh [--duration 30m] [--interval 2m] [--containers 50]
#                         [--churn-per-min 20] [--metrics-url URL --output-file PATH]
#                         [--rate 10] [--stream-window 5s] [--output-dir DIR]
#                         [--warmup 3m] [--rss-growth-max MB]
#
# Without --metrics-url it starts its own daemon (capturing only the containers it
# starts). Prints a line per checkpoint, writes summary.json and chart.png, exits 1
# naming each failed criterion (FD or thread growth, connection reuse, RSS growth over
# the second half, a daemon that died or restarted, lines lost, duplicated or out of
# order). A daemon that dies mid-soak ends the soak at the next checkpoint: what it
# delivered is audited and the summary and chart are still written. Removes every
# container it started, also on Ctrl-C.
# (scripts/smoke_test.py; its daemon, containers and audit come from log_capturer_testkit.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/ensure_docker.sh >/dev/null
scripts/make_test_image.sh >/dev/null
exec .venv/bin/python scripts/smoke_test.py "$@"
