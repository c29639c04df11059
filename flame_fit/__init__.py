"""The FLAME model and every optimisation on it (no Luigi here)."""
