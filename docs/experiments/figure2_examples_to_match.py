"""How far apart Figure 2's curves are along the x axis: the experiment behind
docs/reproduction.md, "Figure 2", `medium`.

  python docs/experiments/figure2_examples_to_match.py runs/reproduce_medium

For each panel, takes AEVB's test bound at the curve's 1st, 3rd, 5th and 7th
points (10^5, 3.2x10^5, 10^6 and 3.2x10^6 examples in `medium`) and prints how
many examples wake-sleep's test curve needs to reach it, interpolated in log x
between its points, as a multiple of AEVB's. Also prints, per panel, AEVB's lead
in nats at every point, train and test. Reads the folder's budget record and
the runs' `curve.csv` files.
"""

import dataclasses
import json
import math
import pathlib
import sys

from pipelines import console  # noqa: F401  (first: a quiet console)

from vae_tf import run_folder
from vae_tf.reproduction import budgets, curves, figure_runs


def panels(output_dir: pathlib.Path) -> list[tuple[figure_runs.RunSpec, figure_runs.RunSpec]]:
  """(AEVB, wake-sleep) run specs of every Figure 2 panel of the folder's budget."""
  record = json.loads((output_dir / budgets.FIGURE_BUDGET_FILE).read_text())
  specs = figure_runs.figure2_specs(budgets.FIGURE_BUDGETS[record["budget"]["name"]])
  return [(spec, dataclasses.replace(spec, method="wake_sleep"))
          for spec in specs if spec.method == "aevb"]


def curve(output_dir: pathlib.Path, spec: figure_runs.RunSpec) -> list[dict]:
  return run_folder.read_csv_rows(
      output_dir / figure_runs.RUNS_DIR / spec.name / curves.CURVE_FILE)


def examples_to_reach(rows: list[dict[str, float]], bound: float) -> float | None:
  """Examples seen when the test curve first reaches `bound`, interpolated in log x."""
  if rows[0]["test_elbo"] >= bound:
    return rows[0]["examples_seen"]
  for before, after in zip(rows, rows[1:]):
    if before["test_elbo"] < bound <= after["test_elbo"]:
      fraction = (bound - before["test_elbo"]) / (after["test_elbo"] - before["test_elbo"])
      log_x = math.log(before["examples_seen"]) + fraction * (
          math.log(after["examples_seen"]) - math.log(before["examples_seen"]))
      return math.exp(log_x)
  return None


def main(output_dir: pathlib.Path) -> None:
  print("panel            wake-sleep examples to reach AEVB's test bound at its point 1, 3, 5, 7")
  for aevb_spec, wake_sleep_spec in panels(output_dir):
    aevb, wake_sleep = curve(output_dir, aevb_spec), curve(output_dir, wake_sleep_spec)
    dataset, nz = aevb_spec.dataset, aevb_spec.latent_dim
    cells = []
    for point in (0, 2, 4, 6):
      reached = examples_to_reach(wake_sleep, aevb[point]["test_elbo"])
      seen = aevb[point]["examples_seen"]
      cells.append(f"{seen:.1e}: " + ("not reached" if reached is None else f"{reached / seen:.1f}x"))
    print(f"{dataset} Nz={nz:<4d} " + "; ".join(cells))
    for split in ("train", "test"):
      leads = [a[f"{split}_elbo"] - w[f"{split}_elbo"] for a, w in zip(aevb, wake_sleep)]
      print(f"    AEVB's {split} lead (nats): " + " ".join(f"{lead:+.1f}" for lead in leads))


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: python docs/experiments/figure2_examples_to_match.py <reproduce output_dir>")
  main(pathlib.Path(sys.argv[1]))
