# `make run` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed-stamp
RUN_DIR ?= runs/make_run

.PHONY: run test serve bench reproduce clean image base-image test-image

# pip and the build backend talk a lot; their log is shown only when they fail.
$(INSTALLED): pyproject.toml
	@echo "installing vae-tf and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -e '.[dev]'; } \
	  > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@

# The paper's MNIST model (Nz=20) on a short budget, then test ELBO and
# importance-sampled log-likelihood. Offline: VAE_TF_MANUAL_DIR=<data folder>.
run: $(INSTALLED)
	$(PY) -m pipelines.train --preset=paper --dataset=mnist --latent_dim=20 \
	  --binarization=dynamic --epochs=40 --model_dir=$(RUN_DIR)
	$(PY) -m pipelines.evaluate --model_dir=$(RUN_DIR) --num_importance_samples=200

# Serves the newest version `make run` exported (REST :8501, gRPC :8500).
# One process per core, each with one TensorFlow thread per pool (docs/serving.md:
# one process is bound by its event loop's core); a batch waits 3 ms for more
# requests only under load, so a lone client is answered at once.
SERVE_PROCESSES ?= $(shell nproc)
serve: $(INSTALLED)
	test -d $(RUN_DIR)/export/vae || $(PY) -m pipelines.export --model_dir=$(RUN_DIR)
	$(PY) -m serving.server --model_name=vae --model_base_path=$(RUN_DIR)/export/vae \
	  --port=8500 --rest_api_port=8501 --enable_batching --batch_timeout_micros_when_busy=10000 \
	  --batching_parameters_file=serving/batching_parameters.pbtxt \
	  --rest_api_max_body_bytes=268435456 --num_processes=$(SERVE_PROCESSES) \
	  --tensorflow_intra_op_parallelism=1 --tensorflow_inter_op_parallelism=1

# The paper's Figures 2-5 (docs/reproduction.md); about 11 minutes on 2 cores.
# REPRODUCE_BUDGET=medium: 10^5 to 10^7 examples per curve (about 2 hours);
# REPRODUCE_BUDGET=paper runs the paper's training lengths (days).
REPRODUCE_BUDGET ?= small
reproduce: $(INSTALLED)
	$(PY) -m pipelines.reproduce all --budget=$(REPRODUCE_BUDGET) \
	  --output_dir=runs/reproduce_$(REPRODUCE_BUDGET)

# One pytest worker per core, and one more: many tests wait on subprocesses
# and sockets, and the extra worker uses that idle time (docs/development.md).
# A file's tests stay on one worker, so its fixtures (trained models,
# servers) are built once.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: $(INSTALLED)
	$(PY) -m pytest tests -q -n $(TEST_WORKERS) --dist loadfile

bench: $(INSTALLED)
	$(PY) -m bench.train_throughput
	$(PY) -m bench.time_to_quality
	$(PY) -m bench.serving_load
	$(PY) -m bench.tune

clean:
	rm -rf runs .pytest_cache

# The container image (docs/container.md): vae-tf:<version> with docker,
# buildah or podman, whichever works. BASE_IMAGE=<image> for another base (GPU,
# or the offline one `make base-image` builds); IMAGE=<tag> for another tag.
image:
	container/build-image.sh

# An offline base from debootstrap and apt (no registry): vae-tf-base:bookworm.
# Then: BASE_IMAGE=vae-tf-base:bookworm make image
base-image:
	container/build-base-image.sh

# Builds the image, then trains, exports, evaluates and serves inside it as its
# user, on $(VAE_TF_MANUAL_DIR)'s MNIST files. Downloads TensorFlow into the
# image, so it is not part of `make test`.
test-image: $(INSTALLED)
	VAE_TF_IMAGE_TEST=1 $(PY) -m pytest tests/image -q -p no:cacheprovider
