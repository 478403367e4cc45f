#!/usr/bin/env bash
# Create .venv and install the project with its development tools (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
mkdir -p .venv
# One install at a time: the soak test starts several scripts that each call this.
exec 9>.venv/.bootstrap.lock
flock 9
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
    if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[dev,chart]'; } \
            >.venv/install.log 2>&1; then
        cat .venv/install.log >&2
        exit 1
    fi
    rm -f .venv/.installed-*
    touch "$stamp"
fi
