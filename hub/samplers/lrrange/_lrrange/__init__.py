"""optuna_lrrange's sampler and what it imports."""
