#!/usr/bin/env bash
# Builds the Debian packages into target/debian/ and prints their paths:
#   ccvm                           /usr/bin/ccvm with the QEMU backends (microvm, q35, virt) and the
#                                  three policies built in, the static guest agent
#                                  (/usr/lib/ccvm/ccvm-guest), bash/zsh/fish completions, ccvm(1)
#   ccvm-backend-cloud-hypervisor  the cloud-hypervisor backend as a plugin library in
#                                  /usr/lib/ccvm/plugins, for the plugin API ccvm provides
# Built with Debian's own dpkg-deb and dpkg-shlibdeps (package dpkg-dev), from a release build in
# target/package/ (the default build is left alone). Usage: scripts/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "ccvm-plugin-api"))')
# Plugins load into a ccvm whose plugin API is caret-compatible (backend-api/src/lib.rs): the same
# minor while the major is 0, the same major after.
IFS=. read -r major minor _ <<<"$version"
if [ "$major" = 0 ]; then next="0.$((minor + 1))"; else next="$((major + 1))"; fi
arch=$(dpkg --print-architecture)
build=target/package
out=target/debian
export CARGO_TARGET_DIR="$PWD/$build/cargo"

cargo build --release --quiet -p ccvm --no-default-features \
    --features backend-microvm,backend-q35,backend-virt
cargo build --release --quiet -p ccvm-backend-cloud-hypervisor-plugin
agent=$(env -u CARGO_TARGET_DIR scripts/build-guest.sh)
bin="$CARGO_TARGET_DIR/release/ccvm"
lib="$CARGO_TARGET_DIR/release/libccvm_plugin_cloud_hypervisor.so"

rm -rf "$build/roots" "$out"
mkdir -p "$out"

# The shared libraries a file needs, as a Depends value (dpkg-shlibdeps wants a debian/control).
shlibs() {
    local dir file
    file=$(realpath "$1")
    dir=$(mktemp -d)
    mkdir -p "$dir/debian"
    printf 'Source: ccvm\n\nPackage: ccvm\nArchitecture: any\n' > "$dir/debian/control"
    # (its warning that the file is not installed in a package yet is expected here)
    (cd "$dir" && dpkg-shlibdeps -O "$file" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
    rm -rf "$dir"
}

# control FILE fields...: writes DEBIAN/control with the installed size.
control() {
    local root=$1
    shift
    mkdir -p "$root/DEBIAN"
    {
        printf '%s\n' "$@"
        printf 'Installed-Size: %s\n' "$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
    } > "$root/DEBIAN/control"
}

common=(
    "Version: $version"
    "Architecture: $arch"
    "Maintainer: ccvm developers <ccvm@localhost>"
    "Section: utils"
    "Priority: optional"
)

# --- ccvm ---------------------------------------------------------------------------------------
root="$build/roots/ccvm"
install -D -m 0755 "$bin" "$root/usr/bin/ccvm"
install -D -m 0755 "$agent" "$root/usr/lib/ccvm/ccvm-guest"
install -d -m 0755 "$root/usr/lib/ccvm/plugins"
install -d -m 0755 "$root/usr/share/bash-completion/completions" \
    "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d" \
    "$root/usr/share/man/man1" "$root/usr/share/doc/ccvm"
"$bin" --ccvm-completions bash > "$root/usr/share/bash-completion/completions/ccvm"
"$bin" --ccvm-completions zsh > "$root/usr/share/zsh/vendor-completions/_ccvm"
"$bin" --ccvm-completions fish > "$root/usr/share/fish/vendor_completions.d/ccvm.fish"
"$bin" --ccvm-man | gzip -9n > "$root/usr/share/man/man1/ccvm.1.gz"
install -m 0644 README.md "$root/usr/share/doc/ccvm/README.md"
chmod 0644 "$root"/usr/share/*/*/ccvm* "$root"/usr/share/zsh/vendor-completions/_ccvm
control "$root" \
    "Package: ccvm" \
    "${common[@]}" \
    "Depends: $(shlibs "$root/usr/bin/ccvm"), openssh-client, qemu-system-x86 | qemu-system-arm" \
    "Recommends: mmdebstrap, squashfs-tools-ng, npm, xz-utils" \
    "Suggests: virtiofsd, xclip | wl-clipboard" \
    "Provides: ccvm-plugin-api (= $version)" \
    "Description: run Claude Code in an ephemeral micro-VM" \
    " Type ccvm instead of claude in a project directory and get the same Claude Code" \
    " session, inside a micro-VM that sees only that directory, never receives your login" \
    " credential, can be locked to an egress allowlist, and vanishes when the session ends." \
    " This package has the QEMU backends (microvm, q35, virt) built in."
dpkg-deb --root-owner-group --build "$root" "$out/ccvm_${version}_${arch}.deb" >/dev/null

# --- ccvm-backend-cloud-hypervisor --------------------------------------------------------------
root="$build/roots/cloud-hypervisor"
install -D -m 0644 "$lib" "$root/usr/lib/ccvm/plugins/libccvm_plugin_cloud_hypervisor.so"
control "$root" \
    "Package: ccvm-backend-cloud-hypervisor" \
    "${common[@]}" \
    "Depends: $(shlibs "$root/usr/lib/ccvm/plugins/libccvm_plugin_cloud_hypervisor.so"), ccvm-plugin-api (>= $version), ccvm-plugin-api (<< $next~)" \
    "Recommends: cloud-hypervisor, virtiofsd" \
    "Description: cloud-hypervisor backend for ccvm" \
    " The cloud-hypervisor backend (KVM only, virtio-fs, hybrid vsock) as a ccvm plugin" \
    " library, loaded from /usr/lib/ccvm/plugins: ccvm --backend cloud-hypervisor."
dpkg-deb --root-owner-group --build "$root" \
    "$out/ccvm-backend-cloud-hypervisor_${version}_${arch}.deb" >/dev/null

ls "$out"/*.deb
