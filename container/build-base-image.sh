#!/usr/bin/env bash
# `make base-image`: an offline base for the vae-tf image, built without any
# registry: `debootstrap --variant=minbase bookworm`, then python3,
# python3-pip and python3-venv through apt inside it (container/base/Containerfile).
# Then: BASE_IMAGE=vae-tf-base:bookworm make image
#
#   BASE_TAG=vae-tf-base:bookworm     the tag
#   DEBIAN_MIRROR=http://deb.debian.org/debian
#   DEBIAN_SECURITY_MIRROR=http://deb.debian.org/debian-security
#   VAE_TF_BUILDER=...                docker | podman | buildah
# Needs root (debootstrap) and the debootstrap package.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/container/lib.sh"

tag="${BASE_TAG:-vae-tf-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] \
  || die "debootstrap not found (apt-get install debootstrap)"
[ "$(id -u)" = 0 ] || die "debootstrap needs root: run as root (e.g. sudo make base-image)"
builder="$(detect_builder)"

work="$(mktemp -d "${TMPDIR:-/var/tmp}/vae-tf-base.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
PATH="$PATH:/usr/sbin:/sbin" debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror"
# The builder provides /dev, /proc, /sys and resolv.conf; downloaded .debs are not needed.
rm -f "$work/rootfs/etc/resolv.conf" "$work/rootfs/etc/hostname" \
  "$work/rootfs"/var/cache/apt/archives/*.deb
rm -rf "$work/rootfs/var/lib/apt/lists"/*
tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
  -C "$work/rootfs" -cf "$work/rootfs.tar" .
rm -rf "$work/rootfs"
cp "$root/container/base/Containerfile" "$work/Containerfile"
build "$builder" "$tag" "$work" -f "$work/Containerfile" \
  --build-arg "DEBIAN_MIRROR=$mirror" --build-arg "DEBIAN_SECURITY_MIRROR=$security"
echo "built $tag with $builder in $(( $(date +%s) - start ))s; size $(image_size "$builder" "$tag")" >&2
