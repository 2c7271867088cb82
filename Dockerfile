# vae-tf: train, tune, export, evaluate, serve, and the serving client.
#
#   make image                     # docker, podman or buildah, whichever works (docs/container.md)
#   docker build -t vae-tf:0.1.0 .
#   docker build -t vae-tf:0.1.0-gpu --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu .
#   buildah bud --layers -t vae-tf:0.1.0 .
#   docker run --rm vae-tf:0.1.0 train --dataset=mnist --epochs=1 --model_dir=/tmp/run
#   docker run --rm --network=host vae-tf:0.1.0 client status --server=localhost:8501
#
# Builder-neutral: only instructions that BuildKit (Docker 23+, no `# syntax`
# line, so no frontend image is pulled) and buildah/podman 1.28+ both
# understand: ARG before FROM, RUN --mount=type=cache and
# RUN --mount=type=secret. No heredocs, no COPY --chmod/--link.
#
# Package index settings stay out of the image. Where pip needs a private CA
# bundle or index, pass them as build secrets; they are mounted for the one
# RUN below and never written to a layer:
#   --secret id=pip-ca,src=<CA bundle>    (becomes PIP_CERT)
#   --secret id=pip-conf,src=<pip.conf>   (becomes PIP_CONFIG_FILE)
# `make image` passes the host's (container/build-image.sh).

# A GPU base must bring TensorFlow 2.21 built for CUDA; pip then keeps it,
# because it already satisfies pyproject.toml's tensorflow requirement.
# Any Debian-like base with python3 (3.10-3.12) and pip works, e.g. the
# offline one `make base-image` builds.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG UID=10001

# PIP_BREAK_SYSTEM_PACKAGES: the image is the environment, and a Debian or
# GPU base's system Python is marked externally managed (PEP 668), refusing the install.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_NO_WARN_SCRIPT_LOCATION=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# Dependencies first, in their own layer, from pyproject.toml alone (as an
# empty package, without its readme), so a change to the sources rebuilds
# only the small layer after it.
WORKDIR /tmp/vae-tf-src
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip-ca \
    --mount=type=secret,id=pip-conf \
    set -eu; \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    if [ -s /run/secrets/pip-conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip-conf; fi; \
    sed -i '/^readme *=/d' pyproject.toml; \
    python3 -m pip install . ; \
    python3 -m pip uninstall --yes vae-tf

# The sources are only the input of `pip install`: the installed package lives
# in site-packages, and this folder is removed once it is built.
COPY pyproject.toml README.md ./
COPY vae_tf/ vae_tf/
COPY pipelines/ pipelines/
COPY serving/ serving/
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip-ca \
    --mount=type=secret,id=pip-conf \
    set -eu; \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    if [ -s /run/secrets/pip-conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip-conf; fi; \
    python3 -m pip install --no-deps . ; \
    cd / && rm -rf /tmp/vae-tf-src; \
    command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python
# (buildah recreates a missing WORKDIR at every later step.)
WORKDIR /

COPY container/vae-tf /usr/local/bin/vae-tf

RUN chmod 0755 /usr/local/bin/vae-tf \
 && groupadd --gid "${UID}" vae \
 && useradd --uid "${UID}" --gid "${UID}" --create-home --home-dir /home/vae \
      --shell /usr/sbin/nologin vae
# Numeric, so Kubernetes' runAsNonRoot can verify it without a runAsUser.
USER ${UID}:${UID}
WORKDIR /home/vae

# gRPC and REST of `vae-tf serve --port=8500 --rest_api_port=8501`; the
# training workers (2222) and the tuning oracle (8000) in k8s/ use env ports.
EXPOSE 8500 8501

ENTRYPOINT ["vae-tf"]
CMD ["help"]
