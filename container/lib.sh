# Shared by the container scripts (sourced): which image builder to use.
#
# VAE_TF_BUILDER=docker|podman|buildah picks one; otherwise the first that
# works: docker (with a reachable daemon), then buildah, then podman. buildah
# comes before podman because `podman build` is buildah underneath, and
# buildah's images are podman's too (the same containers-storage).
# BUILDAH_ISOLATION (buildah's own variable) sets how buildah and podman run
# RUN steps; the default here is chroot, which works inside containers and
# sandboxes where the OCI runtime cannot start (set oci to use runc/crun).

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

detect_builder() {
  if [ -n "${VAE_TF_BUILDER:-}" ]; then
    command -v "$VAE_TF_BUILDER" >/dev/null 2>&1 \
      || die "VAE_TF_BUILDER=$VAE_TF_BUILDER, but $VAE_TF_BUILDER is not on PATH"
    echo "$VAE_TF_BUILDER"
    return
  fi
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v buildah >/dev/null 2>&1; then
    echo buildah
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  else
    die "no container builder found: install docker (with a running daemon), podman or buildah, or set VAE_TF_BUILDER"
  fi
}

# build BUILDER TAG CONTEXT [extra builder arguments...]: builds CONTEXT's
# Dockerfile (or -f FILE in the extra arguments), with layer caching.
build() {
  builder=$1 tag=$2 context=$3
  shift 3
  case "$builder" in
    docker) DOCKER_BUILDKIT=1 docker build -t "$tag" "$@" "$context" ;;
    podman) podman build --layers --isolation "${BUILDAH_ISOLATION:-chroot}" -t "$tag" "$@" "$context" ;;
    buildah) buildah bud --layers --isolation "${BUILDAH_ISOLATION:-chroot}" -t "$tag" "$@" "$context" ;;
    *) die "unknown builder: $builder (docker, podman or buildah)" ;;
  esac
}

# image_size BUILDER TAG: the image's (uncompressed) size, as its builder prints it.
image_size() {
  case "$1" in
    docker) docker image ls --format '{{.Size}}' "$2" ;;
    podman) podman image ls --format '{{.Size}}' "$2" ;;
    buildah) buildah images --format '{{.Size}}' "$2" ;;
  esac
}

project_version() {
  sed -n 's/^version = "\(.*\)"$/\1/p' "$1/pyproject.toml" | head -n 1
}
