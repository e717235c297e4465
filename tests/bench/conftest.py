"""Benchmarks run only when asked for: the default test run passes ``--benchmark-disable``
(pyproject addopts), where each would run once untimed, which for the JAX variants is a minute
of jit compiles on a small CPU and checks nothing that tests/test_conformance.py does not.
``--benchmark-enable`` (as ``tests/bench/run.sh`` passes) runs them."""
from pathlib import Path

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_enable") or not config.getoption("benchmark_disable"):
        return
    deselected = [item for item in items if HERE in item.path.parents and "benchmark" in item.fixturenames]
    if deselected:
        items[:] = [item for item in items if item not in deselected]
        config.hook.pytest_deselected(items=deselected)
