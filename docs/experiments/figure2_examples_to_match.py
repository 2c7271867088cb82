"""How far apart Figure 2's curves are along the x axis: the experiment behind
docs/reproduction.md, "Figure 2", `medium`.

  python docs/experiments/figure2_examples_to_match.py runs/reproduce_medium

For each panel, takes AEVB's test bound at the curve's 1st, 3rd, 5th and 7th
points (10^5, 3.2x10^5, 10^6 and 3.2x10^6 examples in `medium`) and prints how
many examples wake-sleep's test curve needs to reach it, interpolated in log x
between its points, as a multiple of AEVB's. Also prints, per panel, AEVB's lead
in nats at every point, train and test. Reads only the runs' `curve.csv` files.
"""

import csv
import math
import pathlib
import sys

PANELS = [("mnist", nz) for nz in (3, 5, 10, 20, 200)] + \
         [("frey_face", nz) for nz in (2, 5, 10, 20)]


def curve(output_dir: pathlib.Path, name: str) -> list[dict[str, float]]:
  with open(output_dir / "runs" / name / "curve.csv") as f:
    return [{key: float(value) for key, value in row.items() if value} for row in csv.DictReader(f)]


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
  for dataset, nz in PANELS:
    aevb = curve(output_dir, f"{dataset}_nz{nz}_aevb")
    wake_sleep = curve(output_dir, f"{dataset}_nz{nz}_wake_sleep")
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
