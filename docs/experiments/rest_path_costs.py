"""What the REST predict path's synchronous pieces cost per call, in process,
on one thread: the experiment behind docs/serving.md, "The REST floor".

  python docs/experiments/rest_path_costs.py runs/make_run/export/vae/1

The request is bench.serving_load's: `encode` of one 784-float row (4 decimals).
Times the pieces serving.rest runs for it (JSON parsing, JSON to tensors, the
signature checks, the response), and the servable's model call at batch 1, 8,
16 and 64, per call and per row. Best of 5 repeats.
"""

import json
import sys
import timeit

from pipelines import console  # noqa: F401  (first: a quiet console)

import numpy as np
import tensorflow as tf

from serving import json_response, json_tensors
from serving.servable import Servable


def best_microseconds(function, number: int) -> float:
  return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def main(version_dir: str) -> None:
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  values = [round(float(v), 4) for v in np.random.default_rng(0).random(784)]
  body = json.dumps({"signature_name": "encode", "instances": [values]}).encode()
  servable = Servable("vae", 1, version_dir)
  signature = servable.signature("encode")
  document = json_tensors.parse(body)
  inputs, row_format = json_tensors.request_inputs(document, signature.inputs, False)
  names = servable.check_names(signature, inputs, [])
  outputs = servable.run(signature, inputs, names)

  print(f"{'piece':44s} {'us per call':>12s} {'us per row':>11s}")
  for label, function in [
      ("JSON parsing (json_tensors.parse)", lambda: json_tensors.parse(body)),
      ("JSON to tensors (request_inputs)",
       lambda: json_tensors.request_inputs(document, signature.inputs, False)),
      ("signature checks", lambda: (servable.check_names(signature, inputs, []),
                                    servable.check_tensors(signature, inputs))),
      ("response (json_response.response)", lambda: json_response.response(outputs, row_format)),
  ]:
    print(f"{label:44s} {best_microseconds(function, 2000):12.1f}")
  for batch in (1, 8, 16, 64):
    rows = {name: np.repeat(value, batch, axis=0) for name, value in inputs.items()}
    call = best_microseconds(lambda: servable.run(signature, rows, names), 200)
    print(f"{f'model call, batch {batch}':44s} {call:12.1f} {call / batch:11.1f}")


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: python docs/experiments/rest_path_costs.py <SavedModel version folder>")
  main(sys.argv[1])
