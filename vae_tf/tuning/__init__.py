"""Hyperparameter search with KerasTuner, latent dimensionality first.

The paper's central knob is Nz; the search space (`vae_tf.search_space`) also
covers the knobs that interact with it (hidden units, step size, optionally
the estimator and the activation).
  hypermodel.py             builds and fits our `VAE` per trial, on the same
                            `tf.data` stream as `vae_tf.training`, scored by
                            its best validation ELBO;
  tuners.py                 the tuners, and the record that pins a search's
                            settings;
  roles.py                  a process's role (chief, worker, standalone);
  distributed.py            the chief of a distributed search;
  keras_tuner_internals.py  the one place that touches KerasTuner's privates;
  results.py                the summary table and the best model's run folder.

Distributed search uses KerasTuner's own mechanism: a chief process holds the
oracle behind a gRPC service, workers run trials, all configured by
KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT and
sharing one tuner folder.
"""
