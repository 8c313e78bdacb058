#!/usr/bin/env bash
# Installs what building, testing and running ccvm needs on Debian/Ubuntu. Idempotent and
# quick when everything is there: packages already installed are left alone.
#   scripts/deps.sh          everything the test suite needs (CI runs this)
#   scripts/deps.sh --user   the same plus npm, with which the image build downloads Claude Code
#   scripts/deps.sh --aarch64  also what building aarch64 (`virt`) images on an x86_64 host
#                            needs: the cross linker and libc for the guest agent, its rustup
#                            target, and qemu-user registered with binfmt_misc
# The options combine (CI runs `--user --aarch64`).
set -euo pipefail
cd "$(dirname "$0")/.."

user=0
aarch64=0
for option in "$@"; do
    case "$option" in
        --user) user=1 ;;
        --aarch64) aarch64=1 ;;
        *) echo "deps: unknown option $option (--user, --aarch64)" >&2; exit 2 ;;
    esac
done

packages=(
    build-essential git xz-utils
    # the session: hypervisors and the ssh client
    qemu-system-x86 qemu-system-arm openssh-client
    # the terminal tests drive ccvm in tmux; the man page test renders with groff
    tmux groff-base
    # the completion scripts are read by the shells they are for
    zsh fish
    # the clipboard tests: a host X clipboard (Xvfb + xclip) and a headless Wayland one
    # (sway + wl-clipboard); ccvm itself needs only one of xclip / wl-clipboard, at run time
    xvfb xclip wl-clipboard sway
    # the image builder (uidmap: its user-namespace mode, for a user other than root)
    mmdebstrap squashfs-tools-ng uidmap
    # building the Rust virtiofsd (virtio-fs shares)
    pkg-config libseccomp-dev libcap-ng-dev
)
# npm may come from elsewhere (NodeSource's nodejs bundles it and conflicts with Debian's npm).
if [ "$user" = 1 ] && ! command -v npm >/dev/null; then
    packages+=(npm)
fi
if [ "$aarch64" = 1 ] && [ "$(uname -m)" = x86_64 ]; then
    packages+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static binfmt-support arch-test)
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "deps: installing ${missing[*]}" >&2
    $sudo apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The tests run ccvm as `nobody` when they run as root, as a user would run it; an image that
# a session builds on first use is then built in mmdebstrap's user-namespace mode, which needs
# subordinate ids for that user (adduser gives a new user some; nobody has none).
if [ "$(id -u)" -eq 0 ]; then
    for file in /etc/subuid /etc/subgid; do
        grep -q '^nobody:' "$file" 2>/dev/null || echo "nobody:1000000000:65536" >> "$file"
    done
fi

# virtio-fs needs the Rust virtiofsd (the C one in QEMU 7 has no read-only export). It goes
# to /usr/local so that every user, not only the one who built it, can run it.
if ! command -v virtiofsd >/dev/null && [ ! -x /usr/local/bin/virtiofsd ]; then
    echo "deps: building virtiofsd from crates.io (about 2 minutes)" >&2
    target=$(mktemp -d)
    cargo install --quiet --locked --root "$target" virtiofsd@1.14.0
    $sudo install -m 0755 "$target/bin/virtiofsd" /usr/local/bin/virtiofsd
    rm -rf "$target"
fi

if [ "$aarch64" = 1 ] && [ "$(uname -m)" = x86_64 ]; then
    if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
        echo "deps: adding the Rust target aarch64-unknown-linux-gnu" >&2
        rustup target add aarch64-unknown-linux-gnu
    fi
    # The arm64 root's maintainer scripts run under qemu-user through binfmt_misc. Debian
    # registers it at boot (systemd-binfmt); a container has to mount binfmt_misc itself.
    binfmt=/proc/sys/fs/binfmt_misc
    if [ ! -e "$binfmt/status" ]; then
        if [ "$(id -u)" -eq 0 ]; then
            mount -t binfmt_misc binfmt_misc "$binfmt"
        else
            $sudo mount -t binfmt_misc binfmt_misc "$binfmt"
        fi
    fi
    if [ ! -e "$binfmt/qemu-aarch64" ] || ! head -1 "$binfmt/qemu-aarch64" | grep -qx enabled; then
        $sudo update-binfmts --enable qemu-aarch64
    fi
fi
