# syntax=docker/dockerfile:1
# vae-tf: train, tune, export, evaluate, and the serving client.
#
#   docker build -t vae-tf .
#   docker build -t vae-tf:gpu --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu .
#   docker run --rm vae-tf train --dataset=mnist --epochs=1 --model_dir=/tmp/run
#   docker run --rm --network=host vae-tf client status --server=localhost:8501
#
# Models are served by the official tensorflow/serving image (see k8s/), not this one.

# A GPU base must bring TensorFlow 2.21 built for CUDA; pip then keeps it,
# because it already satisfies pyproject.toml's tensorflow requirement.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG UID=10001

# PIP_BREAK_SYSTEM_PACKAGES: the image is the environment, and a GPU base's
# system Python may be marked externally managed (PEP 668), refusing the install.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/vae-tf
COPY pyproject.toml README.md ./
COPY vae_tf/ vae_tf/
COPY pipelines/ pipelines/
COPY serving/ serving/
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m pip install . \
 && { command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python; }

COPY --chmod=0755 <<'EOF' /usr/local/bin/vae-tf
#!/bin/sh
# vae-tf COMMAND [--flag=value ...]: the image's entry points.
usage="usage: vae-tf {train|tune|export|evaluate|client|serve} [--flag=value ...]
  (vae-tf COMMAND --helpfull lists a command's flags)"
case "${1:-}" in
  train|tune|export|evaluate) module="pipelines.$1" ;;
  client) module="serving.client" ;;
  serve) module="serving.server" ;;
  help|-h|--help) echo "$usage"; exit 0 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
shift
exec python -m "$module" "$@"
EOF

RUN groupadd --gid "${UID}" vae \
 && useradd --uid "${UID}" --gid "${UID}" --create-home --home-dir /home/vae \
      --shell /usr/sbin/nologin vae
# Numeric, so Kubernetes' runAsNonRoot can verify it without a runAsUser.
USER ${UID}:${UID}
WORKDIR /home/vae

ENTRYPOINT ["vae-tf"]
CMD ["help"]
