"""Data sets of the paper (MNIST, Frey Face) and tf.data input pipelines."""
