#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for ccvm, installs it into ~/.cargo/bin and shows
# what it found. Idempotent: packages already present are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential git openssh-client qemu-system-x86 qemu-system-arm)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    $sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "setup: Rust is missing; install it with your distribution's rustup package, then rerun" >&2
    exit 1
fi
cargo install --locked --path ccvm-cli
ccvm --ccvm-plugins
