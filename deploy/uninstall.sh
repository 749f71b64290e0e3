#!/bin/bash
# Remove edge-agent: the service, the unit and /opt/edge-agent. Keeps the data
# (/var/lib/edge-agent: the store with whatever the platform has not received),
# the config and credentials (/etc/edge-agent) and the system user that owns the
# data; docs/operations.md says how to remove those too.
#
# Usage: deploy/uninstall.sh [--root DIR] [--no-system]
#   --root DIR    uninstall from under DIR instead of / (or set DESTDIR)
#   --no-system   do not call systemctl (tests)
set -euo pipefail

ROOT=${DESTDIR:-/}
SYSTEM=yes
while [ $# -gt 0 ]; do
    case $1 in
        --root) ROOT=$2; shift 2 ;;
        --no-system) SYSTEM=no; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "uninstall.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
done
ROOT=${ROOT%/}
UNIT=$ROOT/etc/systemd/system/edge-agent.service

if [ "$SYSTEM" = yes ]; then
    # Stopping flushes what is in flight to the store and publishes the offline state.
    systemctl disable --now edge-agent.service 2>/dev/null || true
fi
rm -f "$UNIT"
rm -rf "$ROOT/opt/edge-agent"
if [ "$SYSTEM" = yes ]; then
    systemctl daemon-reload
fi
echo "uninstall.sh: removed edge-agent; kept $ROOT/etc/edge-agent and $ROOT/var/lib/edge-agent"
