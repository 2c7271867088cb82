"""The papers' experiments as resumable runs: figures, tables and their reports.

  budgets.py         how much of each experiment to run, as plain values (no
                     TensorFlow, so the command line checks names at once);
  curves.py          learning curves recorded as training passes their points;
  workers.py         runs side by side, in single-threaded processes;
  figure_runs.py     the training runs behind Kingma & Welling's (2013)
                     Figures 2 to 5, and their learning curves;
  figures.py         those figures, drawn from the finished runs;
  figures_report.py  report.md of the figures;
  iwae_table.py      Burda et al.'s (2015) MNIST log-likelihoods, obtained
                     against published;
  iwae_report.py     iwae_table.md.
Every model trains in its own `vae_tf.training` run folder under
`<output_dir>/runs/`, so rerunning resumes from checkpoints and keeps the
curve points already evaluated.
"""
