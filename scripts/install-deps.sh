#!/usr/bin/env bash
# Installs the Debian packages the project needs (VM engine, guest kernel build, test images),
# plus any package names given as arguments. Only missing ones are installed, so it is cheap to call
# from every script that needs a tool. Runs as root on Debian bookworm.
set -euo pipefail

packages=(
  qemu-system-x86 qemu-utils e2fsprogs cpio busybox-static          # VM engine and guest disk/initramfs
  linux-source-6.1 bc bison flex libelf-dev libssl-dev              # guest kernel (scripts/build-kernel.sh)
  gcc make libc6-dev xz-utils patch                                 # kernel build tools that are only Recommends
  debootstrap umoci skopeo docker-registry apache2-utils            # test images and registries
  python3 curl ca-certificates zstd
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  # "ii" only: dpkg -s also succeeds for removed packages whose config files remain.
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
apt=(apt-get -q -o DPkg::Lock::Timeout=600)
"${apt[@]}" update >&2
DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >&2
