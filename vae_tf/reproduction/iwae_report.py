"""iwae_table.md, the page of the log-likelihood table (`iwae_table.py`)."""

from __future__ import annotations

from pathlib import Path

from vae_tf import run_folder
from vae_tf.reproduction import budgets as budgets_lib


def _row(final: dict) -> str:
  published = final["published"]
  gap = "" if published is None else f"{final['test_log_likelihood'] - published:+.2f}"
  return (f"| {final['label']} | {final['epochs']:,} | {final['batch_size']} | "
          f"{final['test_log_likelihood']:.2f} | {final['test_elbo']:.2f} | "
          f"{'' if published is None else f'{published:.2f}'} | {gap} | "
          f"{final['training_seconds'] / 60:.1f} | {final['training_cpu_seconds'] / 60:.1f} | "
          f"{final['evaluation_seconds'] / 60:.1f} |")


def write(path: Path, budget: budgets_lib.TableBudget, finals: list[dict], command: str,
          machine: str, seconds: float) -> Path:
  """Writes the table of obtained against published test log p(x)."""
  images = {final["test_images"] for final in finals}
  samples = {final["final_samples"] for final in finals}
  lines = [
      f"# MNIST log-likelihood, budget `{budget.name}`: obtained vs published",
      "",
      f"Test log p(x) in nats per image, importance sampled with k={', '.join(map(str, samples))} "
      f"on the first {', '.join(f'{n:,}' for n in images)} test images (dynamically binarized "
      "once, fixed seed); the ELBO is the mean log-weight of the same draws. Published: "
      "Burda, Grosse & Salakhutdinov (2015), Table 1, one stochastic layer, k=5000 on all "
      "10,000 test images.",
      "",
      f"- Model: 784-{'-'.join(map(str, budget.hidden_units))}-{budget.latent_dim} tanh, "
      f"Burda et al.'s optimiser and learning-rate schedule over each model's epochs, "
      f"{'all 60,000' if budget.train_examples is None else f'the first {budget.train_examples:,}'}"
      " training images.",
      f"- Command: `{command}`",
      f"- Machine: {machine}",
      f"- Wall-clock of this invocation: {seconds / 60:.1f} min (0 when every run was already "
      "done). Training minutes are each run's own, summed over resumptions: wall-clock "
      "inside the training steps, and the CPU time of its process in them (all threads), "
      "which other work on a shared machine does not inflate.",
      "",
      "| model | epochs | batch | test log p(x) | test ELBO | published | obtained - published "
      "| training min | training CPU min | evaluation min |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      *[_row(final) for final in finals],
      "",
      "Learning curves (test log p(x) with fewer samples, on a test subset): "
      "`iwae_curves_epochs.png`, `iwae_curves_seconds.png`, `iwae_curves_cpu_seconds.png`, "
      "`iwae_curves.csv`.",
      "",
  ]
  run_folder.write_atomically(path, "\n".join(lines))
  return path
