#!/usr/bin/env bash
# Build the log_capturer image without a registry or package index: the build runs with
# --network=none, from a local base image (scripts/build_base_image.sh) and a wheelhouse
# of the project's dependencies prepared here on the host (CPython 3.11, manylinux
# x86_64), handed to pip in the build through PIP_NO_INDEX / PIP_FIND_LINKS build args.
# The Dockerfile itself stays a plain public one (`docker build .` uses python:3.11-slim
# and PyPI). Idempotent: the wheelhouse is remade only when pyproject.toml changes, the
# base image only when missing, and docker's layer cache does the rest.
#   IMAGE=log-capturer:local  BASE_IMAGE=log-capturer-base/python:3.11-bookworm
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-log-capturer:local}"
LOCAL_BASE="log-capturer-base/python:3.11-bookworm"
BASE_IMAGE="${BASE_IMAGE:-$LOCAL_BASE}"
WHEELHOUSE=.build/wheelhouse
LOG=.build/docker-build.log
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
started=$SECONDS
mkdir -p .build
# One build at a time (two test sessions, or a person and a test): the wheelhouse swap
# and the base image import are not safe to run twice at once.
exec 9>.build/build.lock
flock 9

# -- the wheelhouse: every dependency (and the build backend) as wheels -------------
stamp="$WHEELHOUSE/.pyproject-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    echo "build_image: preparing $WHEELHOUSE"
    tmp="$(mktemp -d .build/wheelhouse.XXXXXX)"
    chmod 755 "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    # Runtime dependencies and build-system requirements, straight from pyproject.toml.
    "$PYTHON" -c '
import tomllib
data = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(data["project"]["dependencies"] + data["build-system"]["requires"]))
' >"$tmp/requirements.txt"
    # Wheels for the image's interpreter, whatever the host runs: binary only, for
    # CPython 3.11 on glibc x86_64 (pure-Python wheels match any platform).
    if ! "$PYTHON" -m pip download -q --dest "$tmp" --only-binary=:all: \
            --implementation cp --python-version 3.11 --abi cp311 \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 \
            -r "$tmp/requirements.txt" >"$tmp/pip.log" 2>&1; then
        cat "$tmp/pip.log" >&2
        exit 1
    fi
    rm -f "$tmp/requirements.txt" "$tmp/pip.log"
    touch "$tmp/$(basename "$stamp")"
    rm -rf "$WHEELHOUSE"
    mv "$tmp" "$WHEELHOUSE"
    trap - EXIT
    echo "build_image: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels," \
        "$(du -sh "$WHEELHOUSE" | cut -f1)"
fi

# -- the base image -------------------------------------------------------------------
if [ "$BASE_IMAGE" = "$LOCAL_BASE" ]; then
    BASE_IMAGE="$LOCAL_BASE" scripts/build_base_image.sh
elif ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "build_image: base image $BASE_IMAGE not found locally (no registry here)" >&2
    exit 1
fi

# -- the image ------------------------------------------------------------------------
if [ ! -f deploy/log_capturer/config.yaml ]; then
    echo "build_image: deploy/log_capturer/config.yaml is missing (the image's config)" >&2
    exit 1
fi

previous="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
echo "build_image: docker build -t $IMAGE (base $BASE_IMAGE, offline)"
build_started=$SECONDS
if ! docker build --network=none \
        --build-arg BASE_IMAGE="$BASE_IMAGE" \
        --build-arg PIP_NO_INDEX=1 \
        --build-arg PIP_FIND_LINKS=/src/.build/wheelhouse \
        -t "$IMAGE" . >"$LOG" 2>&1; then
    echo "build_image: docker build failed; last lines of $LOG:" >&2
    tail -n 40 "$LOG" >&2
    exit 1
fi
current="$(docker image inspect -f '{{.Id}}' "$IMAGE")"
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
    docker rmi "$previous" >/dev/null 2>&1 || true  # the replaced build; kept if in use
fi
steps=$(grep -c '^Step ' "$LOG" || true)
cached=$(grep -c 'Using cache' "$LOG" || true)
size=$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.1f MB", $1/1e6}')
echo "build_image: $IMAGE ${current:7:12}, $size;" \
    "docker build $((SECONDS - build_started))s ($cached of $steps steps cached)," \
    "total $((SECONDS - started))s"
