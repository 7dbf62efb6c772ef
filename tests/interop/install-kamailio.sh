#!/bin/sh
# Install what tests/test_interop_kamailio.py needs: Debian's kamailio
# package, which ships the msrp, auth, sl, pv, textops and xlog modules the
# config in this folder loads. No database, TLS or other module package.
#
# Idempotent: returns at once when the package is already installed.
# Needs root (CI runs it as root from .ci/run).
set -eu

installed() {
    dpkg-query -W -f='${Status}' kamailio 2>/dev/null | grep -q '^install ok installed$'
}

if installed; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-kamailio.sh: kamailio is not installed and this is not root;" \
         "run: sudo sh $0" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends kamailio

if ! installed; then
    echo "install-kamailio.sh: apt-get finished but kamailio is not installed" >&2
    exit 1
fi
