#!/bin/bash
# Install or upgrade edge-agent on a gateway (Debian 12 or similar, systemd).
# Rerunnable: a release is named by its version and a hash of what it is made
# of, so running it again on the same source changes nothing and restarts
# nothing; a changed source is installed as a new release beside the current
# one, switched to, and a running agent is restarted on it.
#
# Usage: deploy/install.sh [--wheel FILE] [--root DIR] [--no-system] [--python PY] [--rollback]
#   --wheel FILE  install this wheel (named by its hash) instead of building this source tree
#   --root DIR    install under DIR instead of / (or set DESTDIR), for tests: the venv's
#                 scripts name their interpreter under DIR, so build images in a chroot
#   --no-system   do not create the user, chown, or call systemctl (images, tests)
#   --python PY   interpreter for the venv (default python3; 3.11 or newer, with venv and
#                 ensurepip: on Debian, apt-get install python3-venv)
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
#
# HASH is the first 12 hex digits of a SHA-256: of the wheel file with --wheel;
# otherwise of the source tree (every file's path and content, see copy_source),
# not of a wheel built from it, whose bytes change with every build.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
USER_NAME=edge-agent

say() { echo "install.sh: $*"; }
die() {
    echo "install.sh: $2" >&2
    exit "$1"
}

current() {
    if [ -L "$OPT/bin" ]; then basename "$(dirname "$(readlink "$OPT/bin")")"; fi
}

# Point /opt/edge-agent/bin at release $1 (atomically: a new symlink renamed over
# the old one) and remember the release it replaces for --rollback. SWITCHED
# says whether anything changed.
switch_to() {
    local was
    was=$(current)
    [ "$was" != "$1" ] || return 0
    ln -sfn "releases/$1/bin" "$OPT/bin.new"
    mv -T "$OPT/bin.new" "$OPT/bin"
    [ -z "$was" ] || echo "$was" >"$OPT/previous"
    SWITCHED=yes
    say "current release: $1${was:+ (previous: $was)}"
}

# Remove every release but the current and the previous one (and what an
# interrupted install left).
prune_releases() {
    local keep previous dir
    keep=$(current)
    previous=$(cat "$OPT/previous" 2>/dev/null || true)
    for dir in "$OPT/releases"/*/; do
        [ -d "$dir" ] || continue
        dir=${dir%/}
        case ${dir##*/} in
            "$keep" | "$previous") ;;
            *)
                say "removing old release ${dir##*/}"
                rm -rf "$dir"
                ;;
        esac
    done
}

# The unit changes only when its file does: the agent is restarted only for a
# new release or a new unit, never for a rerun that changed nothing.
apply_to_systemd() {
    [ "$SYSTEM" = yes ] || return 0
    if [ "$UNIT_CHANGED" = yes ]; then systemctl daemon-reload; fi
    if [ "$SWITCHED" = yes ] || [ "$UNIT_CHANGED" = yes ]; then
        say "restarting edge-agent if it is running"
        systemctl try-restart edge-agent.service
    fi
}

rollback() {
    local previous
    previous=$(cat "$OPT/previous" 2>/dev/null || true)
    if [ -z "$previous" ] || [ ! -e "$OPT/releases/$previous/.complete" ]; then
        die 1 "no previous release to roll back to"
    fi
    switch_to "$previous"
    apply_to_systemd
}

# Before anything is built or written: the interpreter must make venvs with pip
# in them (the release's pip builds and installs it; the interpreter's own pip,
# which Debian packages apart as python3-pip, is not needed).
check_python() {
    command -v "$PYTHON" >/dev/null ||
        die 69 "no $PYTHON: edge-agent needs Python 3.11 or newer (Debian 12: apt-get install python3 python3-venv)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die 69 "edge-agent needs Python 3.11 or newer, $PYTHON is $("$PYTHON" -V 2>&1) (Debian 12: apt-get install python3 python3-venv)"
    "$PYTHON" -c 'import ensurepip, venv; ensurepip.version()' 2>/dev/null ||
        die 69 "$PYTHON cannot create a venv with pip in it (no venv or ensurepip module): on Debian, apt-get install python3-venv"
}

# Copy the source of a release into $1: every file (and symlink) of this tree but version
# control, virtual environments, build output and caches, which building and
# testing leave in a checkout (a release tarball from `make dist` has none).
# The copy is what is hashed and built, so the name fits what was built, and a
# stale build/ in a checkout never ends up in a release.
copy_source() {
    (cd "$SRC" && find . \( -path ./.git -o -path ./.venv -o -path ./build -o -path ./dist \
        -o -path './.*_cache' -o -path ./.hypothesis -o -name __pycache__ -o -name '*.egg-info' \) \
        -prune -o \( -type f -o -type l \) ! -name '*.pyc' ! -path ./.soak.log -print0 |
        tar --create --null --files-from=- --file=-) | tar --extract --file=- --directory="$1"
}

# Files by their content, symlinks by where they point (edge_agent/drivers is one,
# to a folder, which sha256sum cannot read).
tree_hash() {
    (cd "$1" && {
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        find . -type l -printf '%p -> %l\n' | LC_ALL=C sort
    }) | sha256sum | cut -c1-12
}

project_version() {
    "$PYTHON" -c 'import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["project"]["version"])' "$1"
}

# Make release $1 from $2 (a wheel, or a source tree that pip builds) unless it
# is there. Built where it stays (a venv's scripts name their interpreter by
# absolute path) and marked complete last: an interrupted install is redone.
install_release() {
    local dir=$OPT/releases/$1
    if [ -e "$dir/.complete" ]; then
        say "release $1 is already installed"
        return 0
    fi
    say "installing release $1 into $dir"
    rm -rf "$dir"
    mkdir -p "$OPT/releases"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$2"
    touch "$dir/.complete"
}

# The guide, the example, and these scripts for --rollback and uninstalling
# later; the config once; the unit (UNIT_CHANGED says whether it changed).
install_files() {
    mkdir -p "$OPT/share" "$ETC/credentials" "$UNIT_DIR"
    install -m 0644 "$SRC/deploy/agent.example.yaml" "$SRC/docs/operations.md" "$OPT/share/"
    install -m 0755 "$SRC/deploy/install.sh" "$SRC/deploy/uninstall.sh" "$OPT/share/"
    chmod 0750 "$ETC"
    chmod 0700 "$ETC/credentials"
    if [ -e "$ETC/agent.yaml" ]; then
        say "keeping the existing $ETC/agent.yaml"
    else
        install -m 0640 "$SRC/deploy/agent.example.yaml" "$ETC/agent.yaml"
        say "wrote the example config $ETC/agent.yaml: edit it before starting"
    fi
    if ! cmp -s "$SRC/deploy/systemd/edge-agent.service" "$UNIT_DIR/edge-agent.service"; then
        install -m 0644 "$SRC/deploy/systemd/edge-agent.service" "$UNIT_DIR/edge-agent.service"
        UNIT_CHANGED=yes
    fi
}

create_user() {
    [ "$SYSTEM" = yes ] || return 0
    if ! getent passwd "$USER_NAME" >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/edge-agent --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-agent gateway" "$USER_NAME"
        say "created the system user $USER_NAME"
    fi
    # The service reads its config; credentials stay root's (systemd hands them over).
    chown root:"$USER_NAME" "$ETC" "$ETC/agent.yaml"
}

main() {
    local root=${DESTDIR:-/} wheel="" rollback=no
    SYSTEM=yes
    PYTHON=python3
    SWITCHED=no
    UNIT_CHANGED=no
    while [ $# -gt 0 ]; do
        case $1 in
            --wheel) wheel=$2; shift 2 ;;
            --root) root=$2; shift 2 ;;
            --no-system) SYSTEM=no; shift ;;
            --python) PYTHON=$2; shift 2 ;;
            --rollback) rollback=yes; shift ;;
            -h | --help) sed -n '2,28p' "$0"; exit 0 ;;
            *) die 64 "unknown option $1 (see --help)" ;;
        esac
    done
    root=${root%/}
    OPT=$root/opt/edge-agent
    ETC=$root/etc/edge-agent
    UNIT_DIR=$root/etc/systemd/system

    if [ "$rollback" = yes ]; then
        rollback
        return 0
    fi
    check_python
    if [ ! -f "$SRC/pyproject.toml" ] || [ ! -f "$SRC/deploy/systemd/edge-agent.service" ]; then
        die 66 "$SRC is not an edge-agent source tree: run deploy/install.sh of an unpacked release tarball"
    fi
    [ -z "$wheel" ] || [ -f "$wheel" ] || die 66 "no wheel at $wheel"

    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    local release from
    if [ -n "$wheel" ]; then
        release=$(basename "$wheel" | cut -d- -f2)-$(sha256sum <"$wheel" | cut -c1-12)
        from=$wheel
    else
        from=$WORK/src
        mkdir "$from"
        copy_source "$from"
        release=$(project_version "$from/pyproject.toml")-$(tree_hash "$from")
    fi
    install_release "$release" "$from"
    switch_to "$release"
    prune_releases
    install_files
    create_user
    # A first install waits for the operator: edit the config, then
    # `systemctl enable --now edge-agent`; an upgrade restarts a running agent.
    apply_to_systemd
    if [ "$SWITCHED" = yes ] || [ "$UNIT_CHANGED" = yes ]; then
        say "done: release $release"
    else
        say "done: release $release, unchanged"
    fi
}

# All of it is read before any of it runs: the installer may replace its own
# copy in /opt/edge-agent/share.
main "$@"
