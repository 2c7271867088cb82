"""Training throughput on real MNIST: our `model.fit` path against plain Keras.

  python -m bench.train_throughput [--epochs=6] [--binarization=none]

The anchor model is the one of the published reference numbers: MLP
784-400-20, ReLU, Adam(1e-3), M=100, Bernoulli decoder. Three loops train it,
side by side in one process:
  fused     `vae_tf.training.train` (pipelines.train's path): model.fit with
            our train_step applying --updates_per_call SGD updates per call;
  plain     the same model.fit with one update per call;
  keras-io  the reference: a keras.io-style VAE (GradientTape train_step,
            hand-written sigmoid cross-entropy and KL, Dense layers) fitted
            on a NumPy array with jit_compile=True, steps_per_execution=100.
Prints steady-state examples/s (first epoch, with compilation, excluded), the
ratios to the reference, a ceiling (the update's matrix products alone), the
validation ELBO each loop reaches after the same epochs, and the process's RSS
per epoch (to show no growth) and peak.
With --burda_models it also times Burda et al.'s 784-200-200-50 tanh model
(M=100) on the fused path with k=1 (VAE) and k=5 (IWAE).
"""

from __future__ import annotations

from pipelines import console  # noqa: F401  (first: quiet TensorFlow start-up)

import resource
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 6, "Epochs per loop (the first is excluded from the rate).",
                     lower_bound=2)
flags.DEFINE_bool("anchor", True, "Time the anchor model's three loops.")
flags.DEFINE_bool("burda_models", True, "Also time 784-200-200-50 tanh with k=1 and k=5.")
flags.DEFINE_integer("updates_per_call", 50, "SGD updates per compiled call on the fused path.",
                     lower_bound=1)
flags.DEFINE_enum("binarization", "none", ["none", "dynamic"], "Pixels as grey levels (as the "
                  "reference loops) or dynamically binarized.")
flags.DEFINE_integer("threads", 0, "TensorFlow intra- and inter-op threads (0: TensorFlow's "
                     "default, one per core). 1 shows what each of two side-by-side runs gets "
                     "(pipelines.reproduce iwae_table --parallel_runs=2).", lower_bound=0)
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
      "val_elbo": result.history[-1].get("val_elbo", float("nan")),
      "rss_mib": clock.rss_mib,
  }


def _keras_io_rate(train_images, validation_images, epochs: int) -> dict:
  """The reference: a keras.io-style VAE, fitted as that example fits it."""
  import keras
  import numpy as np
  import tensorflow as tf
  from vae_tf.data import pipeline

  class Sampling(keras.layers.Layer):

    def call(self, inputs):
      mean, log_var = inputs
      return mean + tf.exp(0.5 * log_var) * tf.random.normal(tf.shape(mean))

  class KerasIoVAE(keras.Model):

    def __init__(self):
      super().__init__()
      self.hidden = keras.layers.Dense(400, activation="relu")
      self.mean = keras.layers.Dense(20)
      self.log_var = keras.layers.Dense(20)
      self.sampling = Sampling()
      self.decoder_hidden = keras.layers.Dense(400, activation="relu")
      self.logits = keras.layers.Dense(784)
      self.elbo_tracker = keras.metrics.Mean(name="elbo")

    def call(self, x):
      h = self.hidden(x)
      mean, log_var = self.mean(h), self.log_var(h)
      logits = self.logits(self.decoder_hidden(self.sampling([mean, log_var])))
      reconstruction = tf.reduce_sum(
          tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), axis=1)
      kl = -0.5 * tf.reduce_sum(1 + log_var - tf.square(mean) - tf.exp(log_var), axis=1)
      return reconstruction + kl

    @property
    def metrics(self):
      return [self.elbo_tracker]

    def train_step(self, x):
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(self(x))
      gradients = tape.gradient(loss, self.trainable_variables)
      self.optimizer.apply(gradients, self.trainable_variables)
      self.elbo_tracker.update_state(-loss)
      return {"elbo": self.elbo_tracker.result()}

    def test_step(self, x):
      self.elbo_tracker.update_state(-tf.reduce_mean(self(x)))
      return {"elbo": self.elbo_tracker.result()}

  keras.utils.set_random_seed(0)
  model = KerasIoVAE()
  model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True,
                steps_per_execution=100)
  x = pipeline.evaluation_array(train_images, "none")
  x = x[:len(x) // 100 * 100]
  clock = EpochClock()
  history = model.fit(x, batch_size=100, epochs=epochs, shuffle=True, verbose=0,
                      validation_data=(pipeline.evaluation_array(validation_images, "none"),),
                      callbacks=[clock.callback])
  seconds = clock.steady_state_seconds()
  return {"examples_per_second": len(x) * len(seconds) / sum(seconds),
          "val_elbo": float(np.asarray(history.history["val_elbo"][-1]))}


def _matmul_ceiling(updates: int = 50, repeats: int = 5) -> float:
  """Examples/s of the anchor's update cut down to its matrix products
  (bench.matrix_products), for blocks of `updates` minibatches of 100 in one
  XLA call. No loop that trains the model can beat it on this machine."""
  from bench import matrix_products

  batch = 100
  anchor = [([(784, 400), (400, 40), (20, 400), (400, 784)], True, "hidden")]
  run = matrix_products.update_block(anchor, batch, updates)
  return updates * batch / matrix_products.best_seconds(run, repeats, clock=time.perf_counter)


def _burda_rates(train_images, epochs: int) -> dict[int, float]:
  """Fused-path examples/s of 784-200-200-50 tanh (M=100) for k=1 and k=5."""
  from vae_tf import config as config_lib

  rates = {}
  for k in (1, 5):
    model_config = config_lib.ModelConfig(
        input_shape=(28, 28), latent_dim=50, hidden_units=(200, 200), activation="tanh",
        init_stddev=None, estimator="A" if k == 1 else "iwae", num_samples=k)
    train_config = config_lib.TrainConfig(
        binarization="dynamic", optimizer="adam", learning_rate=1e-3, batch_size=100,
        epochs=min(epochs, 3), updates_per_call=FLAGS.updates_per_call,
        checkpoint_every_steps=10**9)
    rates[k] = _fit_rate(model_config, train_config, train_images, None)["examples_per_second"]
  return rates


def main(argv):
  del argv
  import tensorflow as tf
  from vae_tf.data import splits

  if FLAGS.threads:
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
  data = splits.load_splits("mnist", manual_dir=FLAGS.manual_dir)
  train_images, validation_images = data.train, data.validation
  if FLAGS.anchor:
    _print_anchor(train_images, validation_images)
  for k, examples_per_second in (_burda_rates(train_images, FLAGS.epochs)
                                 if FLAGS.burda_models else {}).items():
    print(f"{'784-200-200-50 tanh, M=100, k=' + str(k) + (' (VAE)' if k == 1 else ' (IWAE)'):<52}"
          f"{examples_per_second:>12,.0f}  ({FLAGS.threads or 'default'} TensorFlow threads)")
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"peak RSS: {peak:.0f} MiB")


def _print_anchor(train_images, validation_images) -> None:
  results = {}
  for name, updates_per_call in (("fused", FLAGS.updates_per_call), ("plain", 1)):
    model_config, train_config = _anchor_configs(FLAGS.binarization, updates_per_call,
                                                 FLAGS.epochs)
    results[name] = _fit_rate(model_config, train_config, train_images, validation_images)
  reference = _keras_io_rate(train_images, validation_images, FLAGS.epochs)
  fused, plain = results["fused"], results["plain"]
  rate = reference["examples_per_second"]
  print(f"MNIST, MLP 784-400-20 ReLU, Adam, M=100, {FLAGS.binarization} binarization, "
        f"{FLAGS.epochs} epochs per loop, {FLAGS.threads or 'default'} TensorFlow threads")
  print(f"{'loop':<52}{'examples/s':>12}{'vs keras-io':>13}{'val ELBO':>10}")
  rows = [
      (f"fused: model.fit, {FLAGS.updates_per_call} updates/call (ours)",
       fused["examples_per_second"], fused["val_elbo"]),
      ("plain: model.fit, 1 update/call", plain["examples_per_second"], plain["val_elbo"]),
      ("keras-io: GradientTape train_step, XLA, 100 steps/exec", rate, reference["val_elbo"]),
  ]
  for name, examples_per_second, elbo in rows:
    print(f"{name:<52}{examples_per_second:>12,.0f}{examples_per_second / rate:>12.2f}x"
          f"{elbo:>10.2f}")
  ceiling = _matmul_ceiling()
  print(f"{'ceiling: its matrix products alone, XLA':<52}{ceiling:>12,.0f}{ceiling / rate:>12.2f}x")
  print("RSS per epoch (MiB), fused: " + ", ".join(f"{r:.0f}" for r in fused["rss_mib"]))


if __name__ == "__main__":
  app.run(main)
