"""Seconds from process start until the test ELBO beats a target.

  python -m bench.time_to_quality [--target=-100]

Dynamically binarized MNIST, Nz=20, trained through `vae_tf.training.train`
(pipelines.train's path). After every epoch the test ELBO (test set binarized
once, fixed seed) is measured; the clock includes interpreter start-up,
imports, data loading (decoded images are cached beside TFDS's records after
the first load, `vae_tf.data.sources`), XLA compilation and these evaluations.
"""

from __future__ import annotations

from pipelines import console  # noqa: F401  (first: quiet TensorFlow start-up)

import time

_PROCESS_START = time.time()

import tempfile

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_float("target", -100.0, "Test ELBO (nats) to beat.")
flags.DEFINE_integer("max_epochs", 60, "Give up after this many epochs.", lower_bound=1)
flags.DEFINE_list("hidden_units", ["500", "500"], "Hidden layer sizes.")
flags.DEFINE_string("activation", "relu", "Hidden activation.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam step size.")
flags.DEFINE_integer("batch_size", 100, "Minibatch size M.")
flags.DEFINE_integer("updates_per_call", 50, "SGD updates per compiled call.")
flags.DEFINE_string("manual_dir", None, "Raw data folder for offline preparation.")


def main(argv):
  del argv
  import keras
  from vae_tf import config as config_lib
  from vae_tf import evaluation, training
  from vae_tf.data import pipeline, splits

  data = splits.load_splits("mnist", manual_dir=FLAGS.manual_dir, with_test=True)
  train_images = data.train
  test_x = pipeline.evaluation_array(data.test, "dynamic")
  model_config = config_lib.ModelConfig(
      input_shape=(28, 28), likelihood="bernoulli", latent_dim=20,
      hidden_units=tuple(int(u) for u in FLAGS.hidden_units), activation=FLAGS.activation,
      init_stddev=None, estimator="B", num_samples=1, weight_decay=0.0)
  train_config = config_lib.TrainConfig(
      dataset="mnist", binarization="dynamic", optimizer="adam",
      learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size, epochs=FLAGS.max_epochs,
      updates_per_call=FLAGS.updates_per_call, checkpoint_every_steps=10**9)
  curve = []

  class StopAtTarget(keras.callbacks.Callback):

    def on_epoch_end(self, epoch, logs=None):
      elbo = evaluation.evaluate_elbo(self.model, test_x, batch_size=1000)["elbo"]
      curve.append((epoch + 1, time.time() - _PROCESS_START, elbo))
      if elbo > FLAGS.target:
        self.model.stop_training = True

  with tempfile.TemporaryDirectory() as model_dir:
    # No validation pass: the test ELBO above is the measurement, and a
    # second evaluation per epoch would only add to the clock.
    training.train(model_config, train_config, train_images=train_images,
                   validation_images=None, model_dir=model_dir, verbose=0,
                   callbacks=[StopAtTarget()])
  print(f"MNIST dynamic binarization, MLP 784-{'-'.join(FLAGS.hidden_units)}-20 "
        f"{FLAGS.activation}, Adam {FLAGS.learning_rate:g}, M={FLAGS.batch_size}")
  print("epoch  seconds  test ELBO")
  for epoch, seconds, elbo in curve:
    print(f"{epoch:5d}  {seconds:7.1f}  {elbo:9.2f}")
  reached = [seconds for _, seconds, elbo in curve if elbo > FLAGS.target]
  if reached:
    print(f"test ELBO > {FLAGS.target:g} nats after {reached[0]:.1f} s from process start")
  else:
    print(f"test ELBO did not reach {FLAGS.target:g} nats in {FLAGS.max_epochs} epochs")


if __name__ == "__main__":
  app.run(main)
