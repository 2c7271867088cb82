"""report.md of the figures (`vae_tf.reproduction.figures`), from their CSV files."""

from __future__ import annotations

from pathlib import Path

from vae_tf import run_folder
from vae_tf.reproduction import budgets as budgets_lib

REPORT_FILE = "report.md"

DATASET_NAMES = {"mnist": "MNIST", "frey_face": "Frey Face"}
METHOD_NAMES = {"aevb": "AEVB", "wake_sleep": "Wake-sleep", "mcem": "MCEM"}


def write_report(output_dir: Path, budget: budgets_lib.FigureBudget, seed: int,
                 seconds: dict[str, float]) -> Path:
  """report.md: every figure present in the output folder, with its numbers."""
  output_dir = Path(output_dir)
  sections = [f"# Reproduction of Kingma & Welling (2013), budget `{budget.name}`\n",
              f"Seed {seed}. Written by `python -m pipelines.reproduce`; every number "
              "below comes from the CSV files beside the figures.\n"]
  if seconds.get("runs") is not None:
    sections.append(f"This invocation spent {seconds['runs']:.0f} s training and evaluating "
                    "the runs, side by side; the times per figure below are for drawing "
                    "them.\n")
  writers = {"figure2": _figure2_section, "figure3": _figure3_section,
             "figure4": _figure4_section, "figure5": _figure5_section}
  for figure in budgets_lib.FIGURES:
    if (output_dir / figure).is_dir():
      sections.append(writers[figure](output_dir, budget, seconds.get(figure)))
  path = output_dir / REPORT_FILE
  run_folder.write_atomically(path, "\n".join(sections))
  return path


def _timing(seconds: float | None) -> str:
  return "" if seconds is None else f" This invocation spent {seconds:.0f} s on it."


def _figure2_section(output_dir: Path, budget: budgets_lib.FigureBudget, seconds) -> str:
  rows = run_folder.read_csv_rows(output_dir / "figure2" / "figure2.csv")
  last = {}
  for row in rows:
    last[(row["dataset"], row["latent_dim"], row["method"])] = row
  table = ["| data set | Nz | method | examples seen | train bound | test bound |",
           "| --- | ---: | --- | ---: | ---: | ---: |"]
  table += [f"| {DATASET_NAMES[d]} | {nz} | {METHOD_NAMES[m]} | {r['examples_seen']:,} | "
            f"{r['train_elbo']:.2f} | {r['test_elbo']:.2f} |"
            for (d, nz, m), r in last.items()]
  final = run_folder.read_csv_rows(output_dir / "figure2" / "figure2_final_log_likelihood.csv")
  final_table = ["| Nz | examples seen | test images | test bound | IS log p(x) | k |",
                 "| ---: | ---: | ---: | ---: | ---: | ---: |"]
  final_table += [f"| {r['latent_dim']} | {r['examples_seen']:,} | {r['test_images']} | "
                  f"{r['test_elbo']:.2f} | {r['test_is_log_likelihood']:.2f} | "
                  f"{r['num_importance_samples']} |" for r in final]
  return "\n".join([
      "## Figure 2: lower bound against training examples seen\n",
      f"AEVB against wake-sleep, paper settings (grey-level MNIST, Frey Face), lower bound "
      f"averaged over the first {budget.bound_eval_images} training and test images."
      f"{_timing(seconds)} The paper (to 10^8 examples): AEVB converges considerably "
      "faster than wake-sleep and reaches a better bound for every Nz, and superfluous "
      "latent variables do not overfit.\n",
      *[f"![Figure 2, {DATASET_NAMES[dataset]}](figure2/figure2_{dataset}.png)\n"
        for dataset in ("mnist", "frey_face")
        if (output_dir / "figure2" / f"figure2_{dataset}.png").exists()],
      "Last point of each curve (`figure2/figure2.csv`):\n", *table, "",
      "Final MNIST AEVB models, importance-sampled log p(x) on test images "
      "(`figure2/figure2_final_log_likelihood.csv`):\n", *final_table, ""])


def _figure3_section(output_dir: Path, budget: budgets_lib.FigureBudget, seconds) -> str:
  rows = run_folder.read_csv_rows(output_dir / "figure3" / "figure3.csv")
  last = {}
  for row in rows:
    last[(row["train_examples"], row["method"])] = row
  table = ["| N_train | method | examples seen | train log p(x) | test log p(x) | "
           "test IS log p(x) | training CPU µs per example |",
           "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
  for (n, m), r in last.items():
    test_is = "n/a" if r["test_is_log_likelihood"] is None else \
        f"{r['test_is_log_likelihood']:.2f}"
    cost = 1e6 * r["training_cpu_seconds"] / r["examples_seen"]
    table.append(f"| {n:,} | {METHOD_NAMES[m]} | {r['examples_seen']:,} | "
                 f"{r['train_hmc_log_likelihood']:.2f} | {r['test_hmc_log_likelihood']:.2f} | "
                 f"{test_is} | {cost:.1f} |")
  return "\n".join([
      "## Figure 3: marginal likelihood against training examples seen\n",
      f"MNIST, Nz={budgets_lib.LIKELIHOOD_LATENT_DIM}, {budgets_lib.LIKELIHOOD_HIDDEN_UNITS} "
      f"hidden units. log p(x) by the Appendix D estimator ({budget.hmc_chains} HMC chains x "
      f"{2 * budget.hmc_samples_per_chain} draws after {budget.hmc_burnin_steps} burn-in "
      f"transitions per image) on the first {budget.likelihood_eval_images} training and test "
      f"images; IS with k={budget.is_samples} beside it for the methods with a q(z|x). An MCEM "
      "round covers the whole training set and counts as that many examples seen; the "
      "training CPU time per counted example (compilation included) is what each method "
      "pays for one."
      f"{_timing(seconds)} The paper: MCEM is not an on-line algorithm and, unlike "
      "AEVB and wake-sleep, cannot be applied efficiently to the full MNIST training set.\n",
      "![Figure 3](figure3/figure3.png)\n",
      "Last point of each curve (`figure3/figure3.csv`):\n", *table, ""])


def _image_section(output_dir: Path, figure: str, title: str, seconds) -> str:
  rows = run_folder.read_csv_rows(output_dir / figure / f"{figure}.csv")
  lines = [f"## {title}\n", f"Paper settings; AEVB.{_timing(seconds)}\n"]
  for row in rows:
    lines.append(f"{DATASET_NAMES[row['dataset']]}, Nz={row['latent_dim']}, "
                 f"{row['examples_seen']:,} "
                 f"examples seen, test bound {row['test_elbo']:.2f}:\n")
    lines.append(f"![{row['dataset']} Nz={row['latent_dim']}]({figure}/{row['image']})\n")
  return "\n".join(lines)


def _figure4_section(output_dir: Path, budget: budgets_lib.FigureBudget, seconds) -> str:
  return _image_section(
      output_dir, "figure4", "Figure 4: learned 2-D manifolds (decoder means over the latent "
      "grid of Appendix A, through the inverse Gaussian CDF)", seconds)


def _figure5_section(output_dir: Path, budget: budgets_lib.FigureBudget, seconds) -> str:
  return _image_section(
      output_dir, "figure5", "Figure 5: random samples (decoder means at z ~ p(z))", seconds)
