"""vae-tf: Auto-Encoding Variational Bayes (Kingma & Welling, 2013) in TensorFlow."""
