"""An MCEM run through the command line: `pipelines.train --method=mcem` trains
it without the ELBO's encoder, and `pipelines.evaluate` refuses it in one line."""

from __future__ import annotations

from cli_helpers import run, stderr_lines


def test_train_mcem_then_evaluate_refuses_it_in_one_line(env, tmp_path):
  model_dir = tmp_path / "mcem"
  # Two MCEM sampling rounds on 100 real MNIST images.
  trained = run("pipelines.train", "--method=mcem", "--latent_dim=2", "--hidden_units=20",
                "--train_examples=100", "--batch_size=100", "--steps=2", f"--model_dir={model_dir}",
                env=env)
  assert trained.returncode == 0, trained.stderr
  assert "Traceback" not in trained.stderr
  assert "not exported: mcem learns no encoder" in trained.stdout
  assert (model_dir / "samples.png").exists() and (model_dir / "model.keras").exists()
  assert not (model_dir / "reconstructions.png").exists()
  assert not (model_dir / "export").exists()

  result = run("pipelines.evaluate", f"--model_dir={model_dir}", "--num_importance_samples=5",
               "--num_examples=10", env=env)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  lines = stderr_lines(result)
  # Start-up logging may precede it, but the error is a single line, and the last.
  assert [line for line in lines if line.startswith("error:")] == lines[-1:]
  assert lines[-1] == (
      f"error: {model_dir} holds an MCEM run, and MCEM has no encoder: the ELBO and IS "
      "log p(x) need q(z|x); use pipelines.reproduce figure3 for its marginal likelihood")
  assert not (model_dir / "evaluation.json").exists()
