#!/bin/sh
# Install everything the test suite needs on a Debian/Ubuntu machine, then run the whole suite.
# Run as root: it installs system packages, and the recording tests capture on `lo` with tcpdump.
# The Python side goes into a virtual environment (.venv), so a system Python that refuses
# `pip install` outside one (PEP 668) is no obstacle.
set -eu
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; the answer does not matter for root.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends mosquitto tcpdump tshark tcpreplay chromium openssl python3-venv >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
