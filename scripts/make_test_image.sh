#!/usr/bin/env bash
# Build the tiny image the tests and the smoke test run (no registry needed):
# Debian's static busybox in an otherwise empty root filesystem, via `docker import`.
set -euo pipefail

IMAGE="${TEST_IMAGE:-log-capturer-test/busybox:1}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "make_test_image: $IMAGE exists"
    exit 0
fi

BUSYBOX=""
for candidate in /bin/busybox /usr/bin/busybox; do
    if [ -x "$candidate" ] && ! ldd "$candidate" >/dev/null 2>&1; then
        BUSYBOX="$candidate"  # statically linked
        break
    fi
done
if [ -z "$BUSYBOX" ]; then
    echo "make_test_image: installing busybox-static"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q busybox-static >/dev/null
    BUSYBOX=/bin/busybox
fi

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/bin" "$ROOT/tmp" "$ROOT/etc"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in sh echo seq sleep cat printf head tail yes dd tr date true false env wc; do
    ln -s busybox "$ROOT/bin/$applet"
done
tar -C "$ROOT" -c . | docker import -c 'ENV PATH=/bin' - "$IMAGE" >/dev/null
echo "make_test_image: built $IMAGE"
