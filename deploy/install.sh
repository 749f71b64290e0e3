#!/bin/sh
# Install or upgrade edge-agent on a gateway (Debian 12 or similar, systemd).
# Idempotent: running it again with the same wheel changes nothing; with a new
# wheel it installs that release beside the old one and switches to it.
#
# Usage: deploy/install.sh [--wheel FILE] [--root DIR] [--no-system] [--python PY] [--rollback]
#   --wheel FILE  the wheel to install (default: build one from this source tree)
#   --root DIR    install under DIR instead of / (or set DESTDIR), for tests: the venv's
#                 scripts name their interpreter under DIR, so build images in a chroot
#   --no-system   do not create the user, chown, or call systemctl (images, tests)
#   --python PY   interpreter for the venv (default python3; 3.11 or newer)
#   --rollback    switch back to the release before the current one, and restart
#
# Layout (docs/operations.md):
#   /opt/edge-agent/releases/VERSION-HASH/  one venv per release: the current and the previous
#   /opt/edge-agent/bin -> releases/.../bin the current release; the unit runs bin/edge-agent
#   /opt/edge-agent/share/                  the example config, the operations guide, these scripts
#   /etc/edge-agent/agent.yaml              the config: put in place once, never overwritten
#   /etc/edge-agent/credentials/            secrets for LoadCredential=, root only
#   /etc/systemd/system/edge-agent.service  the unit (customise with `systemctl edit`)
#   /var/lib/edge-agent/                    the store, created by systemd (StateDirectory=)
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${DESTDIR:-/}
WHEEL=
SYSTEM=yes
PYTHON=python3
USER_NAME=edge-agent
ROLLBACK=no

while [ $# -gt 0 ]; do
    case $1 in
        --wheel) WHEEL=$2; shift 2 ;;
        --root) ROOT=$2; shift 2 ;;
        --no-system) SYSTEM=no; shift ;;
        --python) PYTHON=$2; shift 2 ;;
        --rollback) ROLLBACK=yes; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
done

ROOT=${ROOT%/}
OPT=$ROOT/opt/edge-agent
ETC=$ROOT/etc/edge-agent
UNIT_DIR=$ROOT/etc/systemd/system

say() { echo "install.sh: $*"; }

current() {
    if [ -L "$OPT/bin" ]; then basename "$(dirname "$(readlink "$OPT/bin")")"; fi
}

# Point /opt/edge-agent/bin at release $1 (atomically: a new symlink renamed over
# the old one), remember the release it replaces for --rollback, and remove
# every other release.
switch_to() {
    was=$(current)
    if [ "$was" != "$1" ]; then
        ln -sfn "releases/$1/bin" "$OPT/bin.new"
        mv -T "$OPT/bin.new" "$OPT/bin"
        [ -z "$was" ] || echo "$was" > "$OPT/previous"
        say "current release: $1${was:+ (previous: $was)}"
    fi
    previous=$(cat "$OPT/previous" 2>/dev/null || true)
    for dir in "$OPT/releases"/*; do
        name=$(basename "$dir")
        case $name in
            "$1"|"$previous") ;;
            *) say "removing old release $name"; rm -rf "$dir" ;;
        esac
    done
}

restart_if_running() {
    if [ "$SYSTEM" = yes ]; then
        systemctl daemon-reload
        systemctl try-restart edge-agent.service
    fi
}

if [ "$ROLLBACK" = yes ]; then
    previous=$(cat "$OPT/previous" 2>/dev/null || true)
    if [ -z "$previous" ] || [ ! -e "$OPT/releases/$previous/.complete" ]; then
        echo "install.sh: no previous release to roll back to" >&2
        exit 1
    fi
    switch_to "$previous"
    restart_if_running
    exit 0
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "install.sh: edge-agent needs Python 3.11 or newer (Debian 12: apt-get install python3 python3-venv)" >&2
    exit 1
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ -z "$WHEEL" ]; then
    say "building the wheel from $SRC"
    "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK" "$SRC"
    WHEEL=$(ls "$WORK"/edge_agent-*.whl)
fi
[ -f "$WHEEL" ] || { echo "install.sh: no wheel at $WHEEL" >&2; exit 66; }

# A release is named by its version and the wheel's hash, so a rebuilt wheel of
# the same version is a new release and the same wheel is the same release.
VERSION=$(basename "$WHEEL" | cut -d- -f2)
HASH=$(sha256sum "$WHEEL" | cut -c1-12)
RELEASE=$VERSION-$HASH
RELEASES=$OPT/releases
if [ -e "$RELEASES/$RELEASE/.complete" ]; then
    say "release $RELEASE is already installed"
else
    say "installing release $RELEASE into $RELEASES/$RELEASE"
    # Built where it stays (a venv's scripts name their interpreter by absolute
    # path) and marked complete last: an interrupted install is redone next time.
    rm -rf "${RELEASES:?}/$RELEASE"
    mkdir -p "$RELEASES"
    "$PYTHON" -m venv "$RELEASES/$RELEASE"
    "$RELEASES/$RELEASE/bin/pip" install --quiet --disable-pip-version-check "$WHEEL"
    touch "$RELEASES/$RELEASE/.complete"
fi
switch_to "$RELEASE"
# The guide, the example, and these scripts for --rollback and uninstalling later.
mkdir -p "$OPT/share"
cp "$SRC/deploy/agent.example.yaml" "$SRC/docs/operations.md" \
    "$SRC/deploy/install.sh" "$SRC/deploy/uninstall.sh" "$OPT/share/"

mkdir -p "$ETC/credentials" "$UNIT_DIR"
chmod 0750 "$ETC"
chmod 0700 "$ETC/credentials"
if [ -e "$ETC/agent.yaml" ]; then
    say "keeping the existing $ETC/agent.yaml"
else
    install -m 0640 "$SRC/deploy/agent.example.yaml" "$ETC/agent.yaml"
    say "wrote the example config $ETC/agent.yaml: edit it before starting"
fi
install -m 0644 "$SRC/deploy/systemd/edge-agent.service" "$UNIT_DIR/edge-agent.service"

if [ "$SYSTEM" = yes ]; then
    if ! getent passwd "$USER_NAME" >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/edge-agent --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-agent gateway" "$USER_NAME"
        say "created the system user $USER_NAME"
    fi
    # The service reads its config; credentials stay root's (systemd hands them over).
    chown root:"$USER_NAME" "$ETC" "$ETC/agent.yaml"
fi
# An upgrade restarts a running agent on the new release; a first install waits
# for the operator: edit the config, then `systemctl enable --now edge-agent`.
restart_if_running
say "done: release $RELEASE"
