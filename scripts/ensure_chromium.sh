#!/bin/sh
# Install Debian's headless-capable Chromium for the browser test when it is missing.
# Idempotent; never fails the build: when Chromium cannot be installed (no root, no apt, no
# package registry) it says why and exits 0, and tests/acceptance/test_report_browser.py skips
# with that reason.
set -u
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: apt-get not found; the browser test will be skipped (install chromium by hand)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ensure_chromium: not root and no passwordless sudo; the browser test will be skipped" >&2
        exit 0
    fi
fi
echo "ensure_chromium: installing chromium from Debian's packages (once)" >&2
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q chromium >/dev/null 2>&1; then
    echo "ensure_chromium: $(chromium --version 2>/dev/null)" >&2
else
    echo "ensure_chromium: apt-get install chromium failed; the browser test will be skipped" >&2
fi
exit 0
