"""Training throughput on real MNIST: our `model.fit` path vs plain loops.

  python -m bench.train_throughput [--epochs=6] [--binarization=none]

The anchor model is the one of the published reference numbers: MLP
784-400-20, ReLU, Adam(1e-3), M=100, Bernoulli decoder. Three loops train it:
  fused   `vae_tf.training.train` (pipelines.train's path): model.fit with our
          train_step applying --updates_per_call SGD updates per compiled call;
  plain   the same model.fit with one update per call;
  eager   a reference eager loop, one tf.GradientTape step per minibatch.
Prints steady-state examples/s (first epoch, with compilation, excluded), the
ratios, the validation ELBO each loop reaches after the same epochs, and the
process's RSS per epoch (to show no growth) and peak.
"""

from __future__ import annotations

import dataclasses
import resource
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 6, "Epochs per loop (the first is excluded from the rate).",
                     lower_bound=2)
flags.DEFINE_integer("eager_steps", 300, "Minibatches timed for the eager loop.", lower_bound=10)
flags.DEFINE_integer("updates_per_call", 50, "SGD updates per compiled call on the fused path.",
                     lower_bound=1)
flags.DEFINE_enum("binarization", "none", ["none", "dynamic"], "Pixels as grey levels (as the "
                  "reference loops) or dynamically binarized.")
flags.DEFINE_string("manual_dir", None, "Raw data folder for offline preparation.")


def _rss_mib() -> float:
  import psutil
  return psutil.Process().memory_info().rss / 2**20


def _anchor_configs(binarization: str, updates_per_call: int, epochs: int):
  from vae_tf import config as config_lib
  model = config_lib.ModelConfig(
      input_shape=(28, 28), likelihood="bernoulli", latent_dim=20, hidden_units=(400,),
      activation="relu", init_stddev=None, estimator="B", num_samples=1, weight_decay=0.0)
  train = config_lib.TrainConfig(
      dataset="mnist", binarization=binarization, optimizer="adam", learning_rate=1e-3,
      batch_size=100, epochs=epochs, updates_per_call=updates_per_call,
      checkpoint_every_steps=10**9)
  return model, train


class EpochClock:
  """Times each epoch's training steps, stopping the clock before validation."""

  def __init__(self):
    import keras

    clock = self

    class Callback(keras.callbacks.Callback):

      def on_train_begin(self, logs=None):
        clock.marks.append(time.perf_counter())

      def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.params["steps"]:
          clock.marks.append(time.perf_counter())
          clock.rss_mib.append(_rss_mib())

      def on_epoch_begin(self, epoch, logs=None):
        if epoch:
          clock.marks.append(time.perf_counter())

    self.marks, self.rss_mib = [], []
    self.callback = Callback()

  def steady_state_seconds(self) -> list[float]:
    """Durations of epochs 2.. (epoch 1 includes XLA compilation)."""
    return [end - begin for begin, end in zip(self.marks[2::2], self.marks[3::2])]


def _fit_rate(model_config, train_config, train_images, validation_images) -> dict:
  from vae_tf import training

  clock = EpochClock()
  with tempfile.TemporaryDirectory() as model_dir:
    result = training.train(model_config, train_config, train_images=train_images,
                            validation_images=validation_images, model_dir=model_dir,
                            verbose=0, callbacks=[clock.callback])
  seconds = clock.steady_state_seconds()
  examples = len(train_images) // 100 * 100
  return {
      "examples_per_second": examples * len(seconds) / sum(seconds),
      "val_elbo": result.history[-1]["val_elbo"],
      "rss_mib": clock.rss_mib,
  }


def _eager_rate(model_config, train_config, train_images, steps: int) -> float:
  """A reference eager loop: one GradientTape step per minibatch, no tf.function."""
  import numpy as np
  import tensorflow as tf
  from vae_tf import training
  from vae_tf.data import pipeline

  model = training.build_model(model_config, train_config)
  x = pipeline.evaluation_array(train_images, "none")
  rng = np.random.default_rng(0)
  seed = tf.constant([0, 0])

  def step(batch):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(model.elbo_terms(batch, seed).elbo)
    model.optimizer.apply(tape.gradient(loss, model.trainable_variables),
                          model.trainable_variables)

  batches = [tf.constant(x[rng.integers(0, len(x), 100)]) for _ in range(steps + 10)]
  for batch in batches[:10]:
    step(batch)
  start = time.perf_counter()
  for batch in batches[10:]:
    step(batch)
  return 100 * steps / (time.perf_counter() - start)


def main(argv):
  del argv
  from vae_tf.data import pipeline, sources

  images = sources.load_images("mnist", "train", manual_dir=FLAGS.manual_dir)
  train_images, validation_images = pipeline.split_validation(images, 10000)
  results = {}
  for name, updates_per_call in (("fused", FLAGS.updates_per_call), ("plain", 1)):
    model_config, train_config = _anchor_configs(FLAGS.binarization, updates_per_call,
                                                 FLAGS.epochs)
    results[name] = _fit_rate(model_config, train_config, train_images, validation_images)
  model_config, train_config = _anchor_configs(FLAGS.binarization, 1, 1)
  eager = _eager_rate(model_config, train_config, train_images, FLAGS.eager_steps)

  fused, plain = results["fused"], results["plain"]
  print(f"MNIST, MLP 784-400-20 ReLU, Adam, M=100, {FLAGS.binarization} binarization, "
        f"{FLAGS.epochs} epochs per fit loop")
  print(f"{'loop':<44}{'examples/s':>12}{'vs eager':>10}{'val ELBO':>10}")
  rows = [
      (f"fused: model.fit, {FLAGS.updates_per_call} updates/call (ours)",
       fused["examples_per_second"], fused["val_elbo"]),
      ("plain: model.fit, 1 update/call", plain["examples_per_second"], plain["val_elbo"]),
      ("eager: GradientTape loop", eager, float("nan")),
  ]
  for name, rate, elbo in rows:
    print(f"{name:<44}{rate:>12,.0f}{rate / eager:>9.1f}x{elbo:>10.2f}")
  print(f"fused / plain: {fused['examples_per_second'] / plain['examples_per_second']:.2f}x")
  print("RSS per epoch (MiB), fused: " + ", ".join(f"{r:.0f}" for r in fused["rss_mib"]))
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"peak RSS: {peak:.0f} MiB")


if __name__ == "__main__":
  app.run(main)
