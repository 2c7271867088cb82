"""Why wake-sleep stalls at N(0, 0.01^2) initial weights: the experiment behind
docs/reproduction.md, "Wake-sleep at the paper's initialisation".

  VAE_TF_MANUAL_DIR=../shared/data python docs/experiments/wake_sleep_initialisation.py \\
      frey_face wake_sleep 2 0.01 100000,300000,1000000

Trains one run with the paper's settings (`config.preset("paper")`) and the
given initial weight standard deviation, single-threaded, and prints one JSON
line per point of examples seen:
  test_elbo      the lower bound on the first 1,000 test images (nats);
  kl             KL(q(z|x) || p(z)) on them: 0 when q ignores x;
  dream_signal   how much the decoder's mean moves with z ~ p(z) (its
                 standard deviation over 200 draws), over the decoder's own
                 noise (its standard deviation per pixel), averaged over
                 pixels: the information the sleep phase's dreams carry
                 about their z.
"""

import dataclasses
import json
import sys
import tempfile

from pipelines import console  # noqa: F401  (first: a quiet console)

import tensorflow as tf

from vae_tf import config as config_lib
from vae_tf import evaluation, training
from vae_tf.data import pipeline, splits


def main(dataset: str, method: str, latent_dim: int, init_stddev: float, points: list[int]):
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  data = splits.load_splits(dataset, with_test=True)
  model_config, train_config = config_lib.preset("paper", dataset, len(data.train))
  model_config = dataclasses.replace(model_config, latent_dim=latent_dim,
                                     init_stddev=init_stddev)
  train_config = training.fit_updates_per_call(dataclasses.replace(
      train_config, method=method, train_examples=len(data.train), seed=0), len(data.train))
  test_x = pipeline.evaluation_array(data.test[:1000], "none")
  block = train_config.batch_size * train_config.updates_per_call
  model_dir = tempfile.mkdtemp()
  for examples in points:
    steps = max(1, round(examples / block)) * train_config.updates_per_call
    model = training.train(model_config, train_config, train_images=data.train,
                           validation_images=None, model_dir=model_dir, total_steps=steps,
                           verbose=0).model
    bound = evaluation.evaluate_elbo(model, test_x, seed=0)
    dreams = model.decode(tf.random.stateless_normal([200, latent_dim], seed=[1, 2]))
    spread = tf.math.reduce_std(dreams.mean(), axis=0)
    noise = tf.reduce_mean(dreams.stddev(), axis=0)
    print(json.dumps({
        "dataset": dataset, "method": method, "latent_dim": latent_dim,
        "init_stddev": init_stddev, "examples_seen": steps * train_config.batch_size,
        "test_elbo": round(bound["elbo"], 2), "kl": round(bound["kl"], 3),
        "dream_signal": round(float(tf.reduce_mean(spread / noise)), 5)}), flush=True)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]),
       [int(count) for count in sys.argv[5].split(",")])
