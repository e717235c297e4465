"""rnnbench: the harness.  It reaches torch, triton and jax only through ``impls``."""
