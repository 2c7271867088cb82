"""The paper's baselines: wake-sleep and Monte Carlo EM (section 5)."""
