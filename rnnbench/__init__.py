"""rnnbench: the harness.  It reaches torch, triton and jax only through ``impls``."""


def __getattr__(name):
    # ``rnnbench.recommend(...)`` without making ``import rnnbench`` load pandas
    if name == "recommend":
        import importlib

        return importlib.import_module(".recommend", __name__)
    if name == "recommend_for":  # measured here and now, from a torch module (rnnbench.recommend_measure)
        from .recommend_measure import recommend_for

        return recommend_for
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
