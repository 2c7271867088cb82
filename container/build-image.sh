#!/usr/bin/env bash
# `make image`: builds vae-tf:<version> from the Dockerfile with docker,
# buildah or podman (container/lib.sh says which), passing the host's pip
# network settings and CA bundle as build secrets, never into the image.
#
#   IMAGE=vae-tf:0.1.0        the tag (default: vae-tf:<pyproject version>)
#   BASE_IMAGE=<image>        another base, e.g. tensorflow/tensorflow:2.21.0-gpu,
#                             or the offline one `make base-image` tags
#   VAE_TF_BUILDER=...        docker | podman | buildah
#   VAE_TF_PIP_SETTINGS=0     do not pass the host's pip settings
#   BUILD_ARGS="..."          more builder arguments (e.g. --no-cache)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/container/lib.sh"

builder="$(detect_builder)"
version="$(project_version "$root")"
[ -n "$version" ] || die "no version in pyproject.toml"
image="${IMAGE:-vae-tf:$version}"

args=()
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
settings="$(mktemp -d)"
trap 'rm -rf "$settings"' EXIT
if [ "${VAE_TF_PIP_SETTINGS:-1}" != 0 ]; then
  while read -r arg; do
    [ -n "$arg" ] && args+=("$arg")
  done < <(python3 "$root/container/pip_build_settings.py" "$settings" "${PIP_PYTHON:-python3}")
fi
# shellcheck disable=SC2206
args+=(${BUILD_ARGS:-})

echo "building $image with $builder${BASE_IMAGE:+ on $BASE_IMAGE}" >&2
start=$(date +%s)
build "$builder" "$image" "$root" "${args[@]}"
seconds=$(( $(date +%s) - start ))
echo "built $image with $builder in ${seconds}s; size $(image_size "$builder" "$image")" >&2
