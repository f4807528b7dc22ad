"""Training DiHT (and COSMO) with transformers' Trainer: everything that knows about processes and ranks."""
