"""The least CPU the `medium` figures can take on this machine: every run's
work cut down to its matrix products, timed single-threaded under XLA, next
to what the finished run measured. The floor table in docs/reproduction.md.

  python docs/experiments/medium_floor.py runs/reproduce_medium

Per run, "products" counts what no implementation can skip
(bench/matrix_products.py): for each layer the forward product, and for a
trained network the weight gradient and the input gradient (the data layer's
excepted). Sampling, the
likelihood's transcendentals, the optimiser and TFP's HMC bookkeeping are
all left out, so every figure here is below what any real run can reach.

What each method does per charged example (docs/reproduction.md, "The x
axis"): AEVB one forward and backward pass through q and p; wake-sleep a
forward pass of q and a trained p (wake), a forward pass of p and a trained q
(sleep); MCEM 10 leapfrog gradients of log p(x, z) in z and 5 full-batch
weight updates of p per round. Figure 3's evaluations per image: Appendix D's
chains (2 x 200 transitions of 10 leapfrog gradients, 1,000 resampling
proposals, 100 fresh log-joints) and, for AEVB and wake-sleep, IS with 1,000
decoder passes.
"""

import functools
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # bench/ is not installed

from pipelines import console  # noqa: E402,F401  (first: a quiet console)

import tensorflow as tf  # noqa: E402

from bench import matrix_products  # noqa: E402
from vae_tf import run_folder  # noqa: E402

BATCH = 100
UPDATES_PER_CALL = 50
CORE_SECONDS_IN_TARGET = 2 * 2.5 * 3600


def _timed_products(chains, batch: int = BATCH) -> float:
  """Single-threaded CPU µs per row of one update made of `chains`."""
  run = matrix_products.update_block(chains, batch, UPDATES_PER_CALL)
  return matrix_products.best_seconds(run, repeats=3) / (UPDATES_PER_CALL * batch) * 1e6


def _encoder(data_width, hidden, latent):
  return matrix_products.layers(data_width, hidden, 2 * latent)


def _decoder(data_width, hidden, latent, output_width):
  return matrix_products.layers(latent, hidden, output_width)


@functools.lru_cache(maxsize=None)
def per_example_floor(dataset: str, method: str, latent: int, hidden: int) -> float:
  """Products-only CPU µs per charged example of one run's training."""
  data_width, output_width = (784, 784) if dataset == "mnist" else (560, 2 * 560)
  q = _encoder(data_width, hidden, latent)
  p = _decoder(data_width, hidden, latent, output_width)
  if method == "aevb":
    return _timed_products([(q + p, True, "hidden")])
  if method == "wake_sleep":
    return _timed_products([(q, False, "none"), (p, True, "hidden"),
                            (p, False, "none"), (q, True, "hidden")])
  # MCEM: 10 z-gradients per example, then 5 weight updates of p on the full set.
  return (10 * _timed_products([(p, False, "all")], batch=1000)
          + 5 * _timed_products([(p, True, "hidden")], batch=1000))


@functools.lru_cache(maxsize=None)
def evaluation_floor(hidden: int, latent: int, images: int, with_is: bool) -> float:
  """Products-only CPU seconds of one Figure 3 evaluation point."""
  p = _decoder(784, hidden, latent, 784)
  gradient = _timed_products([(p, False, "all")], batch=200)
  forward = _timed_products([(p, False, "none")], batch=1000)
  appendix_d = images * (2 * 200 * 10 * gradient + (1000 + 100) * forward)
  importance = images * 1000 * forward if with_is else 0.0
  return (appendix_d + importance) * 1e-6


RUN_NAME = re.compile(r"(mnist|frey_face)_nz(\d+)(?:_h(\d+)_n\d+)?_(aevb|wake_sleep|mcem)$")


def main(folder: str) -> None:
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  print(f"{'run':<34}{'examples':>12}{'measured s':>12}{'floor s':>10}{'ratio':>8}"
        f"{'eval s':>10}{'floor s':>10}")
  measured_total = floor_total = 0.0
  for run in sorted(pathlib.Path(folder, "runs").iterdir()):
    match = RUN_NAME.match(run.name)
    if not match:
      continue
    dataset, latent, hidden, method = match.groups()
    hidden = int(hidden or (500 if dataset == "mnist" else 200))
    rows = run_folder.read_csv_rows(run / "curve.csv")
    examples = int(rows[-1]["examples_seen"])
    measured = float(rows[-1]["training_cpu_seconds"])
    floor = per_example_floor(dataset, method, int(latent), hidden) * examples * 1e-6
    evaluated = sum(float(row["evaluation_seconds"]) for row in rows)
    evaluation = 0.0
    if match.group(3):  # Figure 3: Appendix D (and IS) on 1,000 + 1,000 images per point
      evaluation = len(rows) * evaluation_floor(hidden, int(latent), 2 * 1000, method != "mcem")
    measured_total += measured + evaluated
    floor_total += floor + evaluation
    print(f"{run.name:<34}{examples:>12,}{measured:>12,.0f}{floor:>10,.0f}"
          f"{measured / floor:>7.2f}x{evaluated:>10,.0f}{evaluation:>10,.0f}")
  print(f"\nall runs: measured {measured_total:,.0f} core-s, products alone {floor_total:,.0f}"
        f" core-s; 2.5 hours on 2 cores is {CORE_SECONDS_IN_TARGET:,.0f}")


if __name__ == "__main__":
  main(sys.argv[1])
