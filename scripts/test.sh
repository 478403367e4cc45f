#!/usr/bin/env bash
# The test command: installs what the tests need, starts a Docker engine if none
# runs, builds the test image, then runs the whole suite (unit + integration).
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -k pool
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/ensure_docker.sh
scripts/ensure_tools.sh
scripts/ensure_podman.sh
scripts/make_test_image.sh
exec .venv/bin/python -m pytest "$@"
