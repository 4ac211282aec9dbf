#!/usr/bin/env bash
# Install what the browser test (pytest -m browser) needs on Debian/Ubuntu: the distribution's
# Chromium. Safe to run repeatedly: it does nothing when the browser is already there.
# Playwright's own browser download ("playwright install") is not used.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(command -v chromium || echo /usr/bin/chromium)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; install Chromium with your package manager and set APDEPTH_CHROMIUM to its path" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Debian names the package "chromium"; Ubuntu's "chromium-browser" is a snap wrapper and will not do.
$SUDO apt-get install -y -qq --no-install-recommends chromium
echo "installed: $(command -v chromium)"
