#!/usr/bin/env bash
# Builds the kubenat container image from Debian packages, without pulling any base image:
#   1. the release binary (cargo build --release --locked --bin kubenat), stripped (the release
#      profile keeps line-level debuginfo for profiling: ~108 MB, ~14 MB stripped);
#   2. a minimal Debian root file system (mmdebstrap --variant=essential, merged /usr) with
#      iptables (nft and legacy), iproute2 and ca-certificates, from the suite and
#      mirrors this machine's apt uses. It is cached as a tarball and reused while the recipe,
#      the apt sources and the package list are unchanged and it is less than a week old;
#   3. the image, committed with buildah into a private container storage (never the machine's
#      default one): /usr/local/bin/kubenat, /usr/local/bin/kube-proxy -> kubenat (so kubeadm's
#      kube-proxy DaemonSet command runs it unchanged), entrypoint /usr/local/bin/kubenat.
# deploy/Containerfile builds the same content where a registry is reachable.
#
# Usage: scripts/build-image.sh [--store DIR] [--archive FILE] [--refresh]
#   --store DIR     container storage to commit into (DIR/root, DIR/runroot; default: a new
#                   temporary directory, or $KUBENAT_IMAGE_STORE). DIR/image.env then names the
#                   image and the storage driver, for tests and for podman:
#                     podman --root DIR/root --runroot DIR/runroot --storage-driver DRIVER ...
#   --archive FILE  also write a docker-archive of the image (ctr -n k8s.io images import FILE,
#                   podman load -i FILE)
#   --refresh       rebuild the root file system even if a cached one fits
# Environment: KUBENAT_IMAGE_CACHE (rootfs cache, default ${XDG_CACHE_HOME:-~/.cache}/kubenat-image,
# /var/cache/kubenat-image without a home),
# KUBENAT_IMAGE_STORAGE_DRIVER (default overlay; vfs when DIR is itself on overlayfs).
# Needs root on Debian; installs mmdebstrap, buildah, podman and runc when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

STORE=${KUBENAT_IMAGE_STORE:-}
ARCHIVE=
REFRESH=0
while [ $# -gt 0 ]; do
  case "$1" in
    --store) STORE=$2; shift 2 ;;
    --archive) ARCHIVE=$2; shift 2 ;;
    --refresh) REFRESH=1; shift ;;
    *) echo "build-image: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

# What goes into the root file system. Changing any of this changes the cache key.
PACKAGES=iptables,iproute2,ca-certificates
MMDEBSTRAP_OPTS=(
  --variant=essential
  --include="$PACKAGES"
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  # Like debian:*-slim: no documentation, manual pages or translations (licences stay).
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  # The container runtime provides /dev.
  --skip=output/dev
  --format=tar
)
ROOTFS_MAX_AGE_DAYS=7
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

t_start=$(date +%s)
t_step=$t_start
step() { # step NAME: prints how long the previous step took
  local now
  now=$(date +%s)
  echo "build-image: $1 ($((now - t_step)) s)"
  t_step=$now
}

if [ "$(id -u)" != 0 ]; then
  echo "build-image: run as root (mmdebstrap and buildah use a root-owned storage)" >&2
  exit 1
fi

# --- tools ----------------------------------------------------------------------------------
missing=()
for tool in mmdebstrap buildah podman runc; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
command -v strip >/dev/null || missing+=(binutils)
if [ ${#missing[@]} -gt 0 ]; then
  echo "build-image: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Without recommends: no slirp4netns/fuse-overlayfs, which a root podman in a given network
  # namespace does not use. buildah pulls in uidmap and the CNI plugins by itself.
  apt-get install -y -qq --no-install-recommends mmdebstrap buildah podman runc binutils >/dev/null
  step "installed ${missing[*]}"
fi

# --- storage --------------------------------------------------------------------------------
if [ -z "$STORE" ]; then
  STORE=$(mktemp -d -t kubenat-image.XXXXXX)
fi
mkdir -p "$STORE"
STORE=$(cd "$STORE" && pwd)
if [ -n "${KUBENAT_IMAGE_STORAGE_DRIVER:-}" ]; then
  DRIVER=$KUBENAT_IMAGE_STORAGE_DRIVER
elif [ "$(stat -f -c %T "$STORE")" = overlayfs ]; then
  DRIVER=vfs # overlay cannot be stacked on overlay
else
  DRIVER=overlay
fi
BUILDAH=(buildah --root "$STORE/root" --runroot "$STORE/runroot" --storage-driver "$DRIVER")
WORK=$(mktemp -d -t kubenat-image-work.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# --- 1. binary ------------------------------------------------------------------------------
cargo build --release --locked --bin kubenat
strip -o "$WORK/kubenat" target/release/kubenat
KUBENAT_VERSION=$("$WORK/kubenat" --version | awk '{print $2}')
TAG=localhost/kubenat:$KUBENAT_VERSION
mb() { echo "$(($(stat -c %s "$1") / 1000000)) MB"; }
step "release binary $KUBENAT_VERSION: $(mb target/release/kubenat), $(mb "$WORK/kubenat") stripped"

# --- 2. root file system --------------------------------------------------------------------
# shellcheck source=/dev/null
SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ -z "$SUITE" ]; then
  echo "build-image: /etc/os-release names no VERSION_CODENAME (not Debian?)" >&2
  exit 1
fi
# This machine's apt sources for that suite (its mirror, -updates and -security), not any
# third-party repository that happens to be configured.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  if grep -v '^[[:space:]]*#' "$f" | grep -Eq "(^|[[:space:]])$SUITE(-[a-z]+)?([[:space:]]|$)"; then
    sources+=("$f")
  fi
done
if [ ${#sources[@]} -eq 0 ]; then
  echo "build-image: no apt source for $SUITE in /etc/apt/sources.list*" >&2
  exit 1
fi
KEY=$( { echo "$SUITE $(dpkg --print-architecture) ${MMDEBSTRAP_OPTS[*]}"; cat "${sources[@]}"; } \
  | sha256sum | cut -c1-16)
if [ -n "${KUBENAT_IMAGE_CACHE:-}" ]; then
  CACHE=$KUBENAT_IMAGE_CACHE
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
  CACHE=$XDG_CACHE_HOME/kubenat-image
elif [ -n "${HOME:-}" ]; then
  CACHE=$HOME/.cache/kubenat-image
else
  CACHE=/var/cache/kubenat-image
fi
ROOTFS=$CACHE/rootfs-$SUITE-$KEY.tar
mkdir -p "$CACHE"
if [ "$REFRESH" = 1 ] || [ -z "$(find "$ROOTFS" -mtime -"$ROOTFS_MAX_AGE_DAYS" 2>/dev/null)" ]; then
  rm -f "$CACHE"/rootfs-*.tar
  echo "build-image: mmdebstrap $SUITE ($PACKAGES) from ${sources[*]}"
  if ! mmdebstrap --quiet "${MMDEBSTRAP_OPTS[@]}" "$SUITE" "$WORK/rootfs.tar" "${sources[@]}" \
       >"$WORK/mmdebstrap.log" 2>&1; then
    cat "$WORK/mmdebstrap.log" >&2
    exit 1
  fi
  mv "$WORK/rootfs.tar" "$ROOTFS"
  step "root file system built: $(mb "$ROOTFS")"
else
  step "root file system reused: $ROOTFS"
fi

# --- 3. image -------------------------------------------------------------------------------
# The root file system is its own layer (image kubenat-rootfs:KEY-MTIME), shared by every
# build made from the same tarball; the binary is the top layer.
BASE=localhost/kubenat-rootfs:$KEY-$(stat -c %Y "$ROOTFS")
if ! "${BUILDAH[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  ctr=$("${BUILDAH[@]}" from --name "kubenat-rootfs-$$" scratch)
  "${BUILDAH[@]}" add --quiet "$ctr" "$ROOTFS" / >/dev/null
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE" >/dev/null
  step "rootfs layer committed"
fi
mkdir -p "$WORK/top/usr/local/bin"
mv "$WORK/kubenat" "$WORK/top/usr/local/bin/kubenat"
# kubeadm's DaemonSet runs /usr/local/bin/kube-proxy --config=... --hostname-override=...;
# kubenat parses the same flags whatever name it is started by.
ln -s kubenat "$WORK/top/usr/local/bin/kube-proxy"
ctr=$("${BUILDAH[@]}" from --pull=never --name "kubenat-build-$$" "$BASE")
"${BUILDAH[@]}" add --quiet "$ctr" "$WORK/top/" / >/dev/null
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
"${BUILDAH[@]}" config \
  --entrypoint '["/usr/local/bin/kubenat"]' --cmd '' \
  --env "PATH=$PATH_ENV" \
  --label org.opencontainers.image.title=kubenat \
  --label "org.opencontainers.image.version=$KUBENAT_VERSION" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.description=kubenat on Debian $SUITE ($PACKAGES)" \
  "$ctr"
"${BUILDAH[@]}" commit --quiet --rm "$ctr" "$TAG" >/dev/null
# Earlier builds under the same tag are left without a name, and root file system layers of
# earlier tarballs unused: drop them.
for old in $("${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/kubenat-rootfs:' || true); do
  [ "$old" = "$BASE" ] || "${BUILDAH[@]}" rmi "$old" >/dev/null
done
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
SIZE=$(podman --root "$STORE/root" --runroot "$STORE/runroot" --storage-driver "$DRIVER" \
  image inspect --format '{{.Size}}' "$TAG")
step "image committed: $TAG, $((SIZE / 1000000)) MB"

if [ -n "$ARCHIVE" ]; then
  rm -f "$ARCHIVE"
  "${BUILDAH[@]}" push --quiet "$TAG" "docker-archive:$ARCHIVE:$TAG"
  step "archive written: $ARCHIVE"
fi

cat >"$STORE/image.env" <<EOF
KUBENAT_IMAGE=$TAG
KUBENAT_IMAGE_STORAGE_DRIVER=$DRIVER
EOF
echo "build-image: done in $(($(date +%s) - t_start)) s: $TAG in $STORE (driver $DRIVER)"
echo "build-image: run it with: podman --root $STORE/root --runroot $STORE/runroot --storage-driver $DRIVER run ... $TAG"
