#!/usr/bin/env bash
# Test fixtures: builds OCI test images from Debian packages (no Docker), serves them from two local
# registries and prints env lines for tests to `eval "$(scripts/test-images.sh)"`:
#   REGISTRY=127.0.0.1:5000        anonymous: busybox:latest, python:slim, whiteout:latest,
#                                  busybox-zstd:latest, multiarch:latest (+ library/ aliases),
#                                  code-interpreter:latest (python3 with matplotlib, numpy, pip; node)
#   AUTH_REGISTRY=127.0.0.1:5001   basic auth (AUTH_USER / AUTH_PASSWORD): private/busybox:latest
#   OCI_LAYOUT=.../busybox-oci     the busybox image as an OCI layout directory (tag latest)
#   OCI_ARCHIVE=.../busybox-oci.tar  the same layout as a tarball
# Everything lives under $BOXLITE_CACHE/test-images. Rootfs trees and layouts are cached, and
# rebuilt when this script changes (the debootstrap tree only with FORCE=1); registries are started
# (detached) only when they do not answer; pushes are repeated every run, which is cheap because
# skopeo skips blobs the registry has, and which repopulates a wiped registry.
# The registry addresses can be moved with REGISTRY and AUTH_REGISTRY.
# Usage: test-images.sh [--busybox-only]   (--busybox-only: just the busybox layout and archive,
# offline: no debootstrap, no registries; prints OCI_LAYOUT and OCI_ARCHIVE)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script="$here/$(basename "${BASH_SOURCE[0]}")"
cache="${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}/test-images"
mirror=${MIRROR:-http://deb.debian.org/debian}
registry=${REGISTRY:-127.0.0.1:5000}
auth_registry=${AUTH_REGISTRY:-127.0.0.1:5001}
auth_user=boxlite
auth_password=boxlite-test
path_env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "test-images: $*" >&2; }

busybox_only=false
case ${1:-} in
  --busybox-only) busybox_only=true ;;
  "") ;;
  *) log "usage: test-images.sh [--busybox-only]"; exit 2 ;;
esac

"$here/install-deps.sh"
mkdir -p "$cache"
cd "$cache"
# One run at a time: runs share the trees, layouts and registries.
exec 9>.lock
flock 9

# Images are rebuilt when their recipe (this script) changes or with FORCE=1; debootstrap is slow,
# so only FORCE=1 redoes it.
recipe=$(sha256sum <"$script" | cut -c1-16)
if [ "${FORCE:-0}" = 1 ]; then
  rm -rf rootfs-python rootfs-code
fi
if [ "${FORCE:-0}" = 1 ] || [ "$(cat recipe 2>/dev/null)" != "$recipe" ]; then
  rm -rf rootfs-busybox ./*-oci ./*-oci.tar
  echo "$recipe" >recipe
fi

# ---------------------------------------------------------------- rootfs trees
# Each tree is built in NAME.tmp and renamed when complete, so a killed run leaves no half tree.

build_busybox_rootfs() { # DIR
  local r=$1
  mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev,run,var/tmp,home}
  chmod 1777 "$r/tmp" "$r/var/tmp"
  chmod 0700 "$r/root"
  install -m 0755 /bin/busybox "$r/bin/busybox"
  # One symlink per applet, at the path busybox itself reports (bin/sh, usr/bin/head, ...).
  /bin/busybox --list-full | while read -r p; do
    [ -e "$r/$p" ] || [ -L "$r/$p" ] || ln -s /bin/busybox "$r/$p"
  done
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'daemon:x:1:1:daemon:/usr/sbin:/bin/false' \
    'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$r/etc/passwd"
  printf '%s\n' 'root:x:0:' 'daemon:x:1:' 'nogroup:x:65534:' >"$r/etc/group"
  echo boxlite >"$r/etc/hostname"
  touch "$r/etc/hosts" "$r/etc/resolv.conf"
  # Lets tests see which manifest of the multi-arch index the runtime picked.
  echo amd64 >"$r/ARCH"
}

# Images carry no package caches, docs or device nodes (the guest mounts its own /dev).
strip_tree() { # DIR
  (cd "$1" && rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* usr/share/doc/* \
    usr/share/man/* usr/share/locale/* dev/*)
  : >"$1/etc/resolv.conf"
}

build_python_rootfs() { # DIR
  local r=$1
  log "debootstrap minbase + python3-minimal (a few minutes)"
  debootstrap --variant=minbase --include=python3-minimal bookworm "$r" "$mirror" >debootstrap.log 2>&1 ||
    { tail -20 debootstrap.log >&2; log "debootstrap failed, see $cache/debootstrap.log"; exit 1; }
  strip_tree "$r"
}

# The code interpreter's image: full python3 (json, asyncio, ...) with matplotlib and numpy, as
# CodeBox's charts and tables need, pip (CodeBox.install_packages) and node (JavaScript contexts).
# Debian's matplotlib depends (through scipy and pythran) on gcc, boost and more that a chart never
# uses; those are removed again, which keeps the image ~400 MB instead of 1.2 GB.
build_code_rootfs() { # DIR
  local r=$1
  log "debootstrap minbase + python3, then matplotlib and numpy (a few minutes)"
  {
    debootstrap --variant=minbase --include=python3 bookworm "$r" "$mirror" &&
      chroot "$r" apt-get update -qq &&
      chroot "$r" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3-matplotlib python3-numpy python3-pip nodejs &&
      chroot "$r" dpkg --purge --force-depends python3-pythran python3-sympy python3-mpmath python3-scipy \
        libboost1.74-dev libboost-dev gcc-12 g++-12 gcc g++ cpp-12 cpp libgcc-12-dev libstdc++-12-dev \
        libc6-dev linux-libc-dev libpython3.11-dev libpython3-dev python3.11-dev python3-dev \
        libopenblas-pthread-dev libopenblas-dev binutils binutils-x86-64-linux-gnu binutils-common \
        libbinutils libasan8 libtsan2 liblsan0 libubsan1 libexpat1-dev zlib1g-dev unicode-data \
        libjs-mathjax fonts-mathjax &&
      chroot "$r" python3 -c 'import matplotlib.pyplot, numpy' && chroot "$r" node -e 0
  } >debootstrap-code.log 2>&1 ||
    { tail -20 debootstrap-code.log >&2; log "building the code-interpreter tree failed, see $cache/debootstrap-code.log"; exit 1; }
  strip_tree "$r"
}

rootfs() { # NAME BUILDER: prints the tree's path, building it first if needed
  local dir="rootfs-$1"
  if [ ! -d "$dir" ]; then
    rm -rf "$dir.tmp"
    "$2" "$dir.tmp"
    mv "$dir.tmp" "$dir"
  fi
  echo "$cache/$dir"
}

# ---------------------------------------------------------------- OCI layouts

layer_tar() { # DIR OUT.tar: DIR's contents as a layer tar with plain relative names (bin/sh, ...)
  local entries
  mapfile -t entries < <(ls -A "$1")
  tar -C "$1" --numeric-owner --sort=name -cf "$2" -- "${entries[@]}"
}

add_layer() { # IMAGE DIR: appends DIR's contents to IMAGE (layout:tag) as one gzip layer
  layer_tar "$2" "$2.tar"
  umoci raw add-layer --image "$1" "$2.tar"
  rm -f "$2.tar"
}

new_image() { # LAYOUT TAG ARCH: an empty image in LAYOUT (created if needed)
  [ -d "$1" ] || umoci init --layout "$1"
  umoci new --image "$1:$2"
  umoci config --image "$1:$2" --os=linux --architecture="$3" --author=boxlite-tests
}

busybox_layout() {
  local l=$1 root
  root=$(rootfs busybox build_busybox_rootfs)
  new_image "$l" latest amd64
  add_layer "$l:latest" "$root"
  umoci config --image "$l:latest" --config.env="$path_env" --config.env=GREETING=hello-from-image \
    --config.workingdir=/home --config.cmd=/bin/sh
}

python_layout() {
  local l=$1 root
  root=$(rootfs python build_python_rootfs)
  new_image "$l" slim amd64
  add_layer "$l:slim" "$root"
  umoci config --image "$l:slim" --config.env="$path_env" --config.env=LANG=C.UTF-8 \
    --config.workingdir=/ --config.cmd=python3
}

code_layout() {
  local l=$1 root
  root=$(rootfs code build_code_rootfs)
  new_image "$l" latest amd64
  add_layer "$l:latest" "$root"
  umoci config --image "$l:latest" --config.env="$path_env" --config.env=LANG=C.UTF-8 \
    --config.workingdir=/root --config.cmd=python3
}

whiteout_layout() {
  local l=$1 stage="$1.stage" root
  root=$(rootfs busybox build_busybox_rootfs)
  new_image "$l" latest amd64
  # Layer 1: busybox plus the files layer 2 deletes, replaces and hides.
  rm -rf "$stage" && mkdir -p "$stage"
  cp -a "$root/." "$stage/1"
  mkdir -p "$stage/1/opaque"
  echo gone >"$stage/1/etc/gone.txt"
  echo keep >"$stage/1/etc/keep.txt"
  echo old >"$stage/1/etc/replaced.txt"
  echo a >"$stage/1/opaque/a"
  echo b >"$stage/1/opaque/b"
  add_layer "$l:latest" "$stage/1"
  # Layer 2, by hand because umoci would list deleted files one by one instead of an opaque marker.
  mkdir -p "$stage/2/etc" "$stage/2/opaque"
  : >"$stage/2/etc/.wh.gone.txt"
  echo new >"$stage/2/etc/replaced.txt"
  : >"$stage/2/opaque/.wh..wh..opq"
  echo c >"$stage/2/opaque/c"
  add_layer "$l:latest" "$stage/2"
  rm -rf "$stage"
  umoci config --image "$l:latest" --config.env="$path_env" --config.cmd=/bin/sh
  # The runtime's whiteout handling is only tested if the pushed layer really holds the markers.
  local top entries
  top=$(python3 - "$l" <<'PY'
import json, sys
blobs = sys.argv[1] + "/blobs/sha256/"
manifest = json.load(open(blobs + json.load(open(sys.argv[1] + "/index.json"))["manifests"][0]["digest"][7:]))
print(blobs + manifest["layers"][-1]["digest"][7:])
PY
)
  entries=$(tar tzf "$top")
  if ! grep -qx 'etc/.wh.gone.txt' <<<"$entries" || ! grep -qx 'opaque/.wh..wh..opq' <<<"$entries"; then
    log "whiteout layer lacks its markers"
    exit 1
  fi
}

busybox_zstd_layout() {
  # Recompressed into a fresh layout: pushed straight from the gzip layout, skopeo could reuse the
  # registry's gzip blob of the same layer and the image would not be zstd at all.
  skopeo copy -q --insecure-policy --dest-compress-format zstd "oci:busybox-oci:latest" "oci:$1:latest" >&2
}

multiarch_layout() {
  local l=$1 arm="$1.arm64"
  new_image "$l" arm64 arm64
  umoci config --image "$l:arm64" --config.cmd=/bin/sh
  mkdir -p "$arm" && echo arm64 >"$arm/ARCH"
  add_layer "$l:arm64" "$arm"
  rm -rf "$arm"
  skopeo copy -q --insecure-policy --preserve-digests "oci:busybox-oci:latest" "oci:$l:amd64" >&2
  # An image index listing arm64 first, so a runtime that takes the first entry gets it wrong.
  python3 - "$l" <<'PY'
import hashlib, json, os, sys
layout = sys.argv[1]
index_path = os.path.join(layout, "index.json")
top = json.load(open(index_path))
by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in top["manifests"]}
def entry(tag, platform):
    m = dict(by_tag[tag], platform=platform)
    del m["annotations"]
    return m
image_index = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [entry("arm64", {"architecture": "arm64", "os": "linux", "variant": "v8"}),
                  entry("amd64", {"architecture": "amd64", "os": "linux"})],
}).encode()
digest = hashlib.sha256(image_index).hexdigest()
open(os.path.join(layout, "blobs", "sha256", digest), "wb").write(image_index)
top["manifests"] = [{"mediaType": "application/vnd.oci.image.index.v1+json",
                     "digest": "sha256:" + digest, "size": len(image_index),
                     "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
json.dump(top, open(index_path, "w"))
PY
}

layout() { # NAME BUILDER: builds NAME-oci (in NAME-oci.tmp, renamed when complete) unless cached
  local dir="$1-oci"
  [ -d "$dir" ] && return 0
  log "building $dir"
  rm -rf "$dir.tmp"
  "$2" "$dir.tmp" >&2
  # Drops the blobs that umoci config replaced along the way.
  umoci gc --layout "$dir.tmp"
  mv "$dir.tmp" "$dir"
}

layout busybox busybox_layout
if [ ! -f busybox-oci.tar ]; then
  tar -C busybox-oci -cf busybox-oci.tar.tmp .
  mv busybox-oci.tar.tmp busybox-oci.tar
fi
if $busybox_only; then
  printf '%s=%q\n' OCI_LAYOUT "$cache/busybox-oci" OCI_ARCHIVE "$cache/busybox-oci.tar"
  exit 0
fi
layout python python_layout
layout whiteout whiteout_layout
layout busybox-zstd busybox_zstd_layout
layout multiarch multiarch_layout
layout code code_layout

# ---------------------------------------------------------------- registries

registry_up() { # ADDR [USER:PASSWORD]
  curl -fsS -m 2 ${2:+-u "$2"} "http://$1/v2/" >/dev/null 2>&1
}

start_registry() { # ADDR [USER:PASSWORD]
  local addr=$1 creds=${2:-} dir="$cache/registry-${1##*:}" auth=""
  registry_up "$addr" "$creds" && return 0
  mkdir -p "$dir/data"
  if [ -n "$creds" ]; then
    htpasswd -Bbn "${creds%%:*}" "${creds#*:}" >"$dir/htpasswd"
    auth=$(printf 'auth:\n  htpasswd:\n    realm: boxlite-test\n    path: %s\n' "$dir/htpasswd")
  fi
  # No blob descriptor cache: with one, a registry whose data dir was wiped under it would claim
  # blobs it no longer has, and pushes would skip them.
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $addr
$auth
EOF
  log "starting docker-registry on $addr (log $dir/registry.log)"
  # 9>&-: the registry outlives this run and must not hold the run lock.
  setsid nohup docker-registry serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 </dev/null 9>&- &
  echo $! >"$dir/registry.pid"
  for _ in $(seq 100); do
    registry_up "$addr" "$creds" && return 0
    sleep 0.1
  done
  tail -20 "$dir/registry.log" >&2
  log "registry on $addr did not come up"
  exit 1
}

start_registry "$registry"
start_registry "$auth_registry" "$auth_user:$auth_password"

# ---------------------------------------------------------------- push
# --preserve-digests: the registry gets exactly the layouts' manifests and blobs (no recompression,
# no substituting a blob the registry already has in another compression).
push() { # SRC-LAYOUT:TAG DEST-ADDR/REPO:TAG [skopeo options...]
  local src=$1 dest=$2
  shift 2
  skopeo copy -q --insecure-policy --preserve-digests --dest-tls-verify=false "$@" \
    "oci:$cache/$src" "docker://$dest" >&2
}

log "pushing to $registry and $auth_registry"
push busybox-oci:latest "$registry/busybox:latest"
push python-oci:slim "$registry/python:slim"
# Docker Hub style names too, for references that normalize "busybox" to "library/busybox".
push busybox-oci:latest "$registry/library/busybox:latest"
push python-oci:slim "$registry/library/python:slim"
push code-oci:latest "$registry/code-interpreter:latest"
push whiteout-oci:latest "$registry/whiteout:latest"
push busybox-zstd-oci:latest "$registry/busybox-zstd:latest"
push multiarch-oci:latest "$registry/multiarch:latest" --all
push busybox-oci:latest "$auth_registry/private/busybox:latest" --dest-creds "$auth_user:$auth_password"

printf '%s=%q\n' REGISTRY "$registry" AUTH_REGISTRY "$auth_registry" AUTH_USER "$auth_user" \
  AUTH_PASSWORD "$auth_password" OCI_LAYOUT "$cache/busybox-oci" OCI_ARCHIVE "$cache/busybox-oci.tar"
