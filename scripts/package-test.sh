#!/usr/bin/env bash
# CI: builds the Debian packages (scripts/package.sh) and installs them into a clean Debian
# bookworm root made by mmdebstrap, with apt resolving their dependencies from Debian, then checks
# what a user of the packages meets: the backend plugin package cannot be installed without a ccvm
# that provides its plugin API; with `ccvm` alone, `ccvm --ccvm-plugins` lists no cloud-hypervisor;
# with the plugin package it lists it as loaded from /usr/lib/ccvm/plugins; removing the package
# removes it again; `man ccvm` renders; bash's completion (from bash-completion's loader) offers
# --ccvm-doctor. Needs root (chroot); without it the test skips, or fails under
# CCVM_REQUIRE_VM_TESTS=1. The clean root's base is cached for a week in
# $XDG_CACHE_HOME/ccvm-ci/.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "package-test: FAILED: $*" >&2
    exit 1
}
if [ "$(id -u)" != 0 ] || ! command -v mmdebstrap >/dev/null; then
    reason="needs root and mmdebstrap (to chroot into a clean Debian root)"
    if [ "${CCVM_REQUIRE_VM_TESTS:-}" = 1 ]; then fail "$reason"; fi
    echo "package-test: skipped: $reason"
    exit 0
fi

mapfile -t debs < <(scripts/package.sh)
ccvm_deb=$(printf '%s\n' "${debs[@]}" | grep '/ccvm_')
plugin_deb=$(printf '%s\n' "${debs[@]}" | grep '/ccvm-backend-cloud-hypervisor_')

cache="${XDG_CACHE_HOME:-$HOME/.cache}/ccvm-ci"
base="$cache/bookworm-base.tar"
mkdir -p "$cache"
if [ ! -s "$base" ] || [ -n "$(find "$base" -mtime +7)" ]; then
    echo "package-test: a clean bookworm root with mmdebstrap (usually 1-2 minutes)" >&2
    rm -rf "$base.partial"
    mmdebstrap --quiet --format=tar --variant=apt --include=bash-completion,man-db bookworm \
        "$base.partial"
    mv "$base.partial" "$base"
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/ccvm-package-test.XXXXXX")
cleanup() {
    for m in dev proc; do
        if mountpoint -q "$root/$m"; then umount -R -l "$root/$m"; fi
    done
    rm -rf --one-file-system "$root"
}
trap cleanup EXIT
tar -C "$root" -xf "$base"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"
mount -t proc proc "$root/proc"
mkdir -p "$root/tmp/debs"
cp "$ccvm_deb" "$plugin_deb" "$root/tmp/debs/"
in_root() {
    chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        TERM=dumb DEBIAN_FRONTEND=noninteractive "$@"
}
apt_install() {
    in_root apt-get install --yes --quiet --no-install-recommends "$@"
}
plugin="/tmp/debs/$(basename "$plugin_deb")"
ccvm="/tmp/debs/$(basename "$ccvm_deb")"

in_root apt-get update --quiet >/dev/null
# The plugin package alone: nothing provides the plugin API it was built for.
if apt_install "$plugin" >"$root/tmp/alone.log" 2>&1; then
    fail "the backend package installed without ccvm"
fi
grep -q "ccvm-plugin-api" "$root/tmp/alone.log" ||
    fail "apt's refusal does not name ccvm-plugin-api: $(cat "$root/tmp/alone.log")"

apt_install "$ccvm" >/dev/null
plugins=$(in_root ccvm --ccvm-plugins)
grep -Eq '^backend +microvm .* built-in +active' <<<"$plugins" ||
    fail "microvm is not built in: $plugins"
if grep -q cloud-hypervisor <<<"$plugins"; then
    fail "cloud-hypervisor listed without its package: $plugins"
fi

apt_install "$plugin" >/dev/null
plugins=$(in_root ccvm --ccvm-plugins)
grep -Eq '^backend +cloud-hypervisor .*/usr/lib/ccvm/plugins/libccvm_plugin_cloud_hypervisor\.so +active' <<<"$plugins" ||
    fail "cloud-hypervisor is not loaded from /usr/lib/ccvm/plugins: $plugins"

in_root dpkg --remove ccvm-backend-cloud-hypervisor >/dev/null
plugins=$(in_root ccvm --ccvm-plugins)
if grep -q cloud-hypervisor <<<"$plugins"; then
    fail "cloud-hypervisor still listed after its package was removed: $plugins"
fi

page=$(in_root sh -c 'MANPAGER=cat MANWIDTH=100 man ccvm 2>&1')
grep -q -- '--ccvm-doctor' <<<"$page" || fail "man ccvm did not render: $page"

# What an interactive bash does on Tab: bash-completion loads the package's file on first use.
offered=$(in_root bash -c '
    source /usr/share/bash-completion/bash_completion
    _completion_loader ccvm
    COMP_WORDS=(ccvm --ccvm-do); COMP_CWORD=1; COMP_LINE="ccvm --ccvm-do"; COMP_POINT=${#COMP_LINE}
    "$(complete -p ccvm | sed -n "s/.*-F \([^ ]*\) .*/\1/p")" ccvm --ccvm-do ccvm
    printf "%s\n" "${COMPREPLY[@]}"')
grep -qx -- '--ccvm-doctor' <<<"$offered" || fail "bash completion offered: $offered"

echo "package-test: ok (${debs[*]##*/})"
