"""The offline kernel check: every plan the triton backends choose, compiled for a GPU without one.

Plans come from ``impls.triton.plan.make_plan`` (through ``impls.triton.kernel_check.plans``), are
compiled for sm_90 (H100/H200) with the installed triton and its ptxas, and must stay within
tests/kernel_budget.json: spill bytes per thread (0 for the plans a suite times) and shared memory
within the target.  Spills differ between triton versions, so the budget file says which version
it holds for; a triton without an entry fails until its figures are checked and recorded.

The default run compiles one plan (the one the check first flagged), without lengths and ragged
reverse; the plans the suites time (about 130 kernels with the ragged suite's variants, some minutes on
2 workers) are marked slow and run by an explicit line in .ci/run; the full grid (3 backends x 3 cells x 5 H x 3 dtypes, sm_90 and sm_80) is slow too.
"""
import json
import os

import pytest

import impls
from impls.triton import kernel_check
from rnnbench import suites

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_FILE = os.path.join(ROOT, "tests", "kernel_budget.json")
TIMED_SUITES = ("kernels", "gpu-check")
# the ragged suite's Triton rows on CUDA (LSTM and GRU, H=128 fp32, each variant): same budget, their own slow test,
# outside .ci/run's line (63 kernels more, some minutes on 2 workers)
RAGGED_SUITES = ("ragged",)
KERNELS_OF_MODE = {"forward": ("fwd",), "train": ("fwd_save", "bwd")}


def variants_of(axes: dict) -> tuple:
    """The kernel variants a suite's bidirectional and lengths axes run: a bidirectional model runs both
    directions; a length mix other than full runs the kernels with lengths (full runs them without)."""
    reverse = (False, True) if True in axes.get("bidirectional", [False]) else (False,)
    ragged = (False, True) if set(axes.get("lengths", ["full"])) - {"full"} else (False,)
    names = {(False, False): "", (True, False): "ragged", (False, True): "reverse", (True, True): "ragged-reverse"}
    return tuple(names[(g, r)] for g in ragged for r in reverse)


def _ptxas():
    try:
        import triton
    except ImportError:
        return None
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


needs_ptxas = pytest.mark.skipif(not (_ptxas() and os.path.exists(_ptxas())), reason="triton ships no ptxas here")


def budget() -> dict:
    """The budget for the installed triton (fails naming the versions the file has)."""
    import triton

    with open(BUDGET_FILE) as f:
        versions = json.load(f)["versions"]
    if triton.__version__ not in versions:
        pytest.fail(f"{BUDGET_FILE} has no budget for triton {triton.__version__} (it has {', '.join(versions)}): "
                    "run `python -m impls.triton.kernel_check`, check the figures and add them")
    return versions[triton.__version__]


def timed_kernels(names=TIMED_SUITES) -> list:
    """The kernels the GPU suites time: each suite point (and extra) as (cell, H, dtype, kernels, variants), every
    triton backend."""
    points = set()
    for name in names:
        suite = suites.get(name)
        axes, variants = suite.axes, variants_of(suite.axes)
        for cell in axes["cells"]:
            for h in axes["hidden"]:
                for dtype in axes["dtype"]:
                    for mode in axes["mode"]:
                        points.add((cell, h, dtype, mode, variants))
        points |= {(e["cell"], e["hidden"], e["dtype"], e["mode"], ("",)) for e in suite.extra}
    out = []
    for cell, h, dtype, mode, variants in sorted(points):
        out += kernel_check.plans([cell], [h], [dtype], KERNELS_OF_MODE[mode], variants=variants)
    unique = {(k.backend, k.cell, k.hidden, k.dtype, k.kernel, k.variant): k for k in out}
    return list(unique.values())


def check(items, arch, limits, spill_budget):
    """Compile; fail naming each kernel over its budget (a recorded allowance, else ``spill_budget``)."""
    results = list(kernel_check.compile_all(items, arch=arch, workers=2))
    allowed = {name: a["bytes"] for name, a in limits.get("allowances", {}).items()}
    bad = []
    for r in results:
        bad += kernel_check.violations([r], allowed.get(r["name"], spill_budget), arch)
    assert not bad, "\n".join(bad)
    return results


def test_plans_are_enumerated_from_plan_py():
    items = kernel_check.plans()
    backends = {k.backend for k in items}
    assert {"triton", "triton_stepwise", "triton_wt"} <= backends
    paths = {k.plan.path for k in items}
    assert paths == {"fused", "persistent", "stepwise"}
    assert {k.hidden for k in items} == set(kernel_check.HIDDEN) and {k.dtype for k in items} == set(kernel_check.DTYPES)
    assert all(k.plan.transposed == (k.backend == "triton_wt") for k in items)
    lstm64 = [k for k in items if (k.backend, k.cell, k.hidden, k.dtype) == ("triton", "lstm", 64, "float32")]
    assert sorted(k.kernel for k in lstm64 if not k.variant) == ["bwd", "fwd", "fwd_save"]
    assert {k.variant for k in lstm64} == set(kernel_check.VARIANTS) and len(lstm64) == 12
    assert {(k.reverse, k.ragged) for k in lstm64} == {(False, False), (True, False), (False, True), (True, True)}


def test_timed_kernels_cover_the_suites():
    names = {k.name for k in timed_kernels()}
    assert "triton/lstm/H128/bfloat16/fwd" in names and "triton_wt/lstm/H256/float32/bwd" in names
    assert "triton/gru/H128/bfloat16/bwd" in names and "triton/gru/H64/float32/bwd" not in names
    assert not any("ragged" in n or "reverse" in n for n in names)  # those suites run full unidirectional batches
    # the ragged suite on CUDA: LSTM and GRU at H=128 fp32, both directions, with and without lengths
    ragged = {k.name for k in timed_kernels(RAGGED_SUITES)}
    assert {"triton_stepwise/gru/H128/float32/bwd-ragged-reverse", "triton_wt/lstm/H128/float32/fwd-reverse",
            "triton/gru/H128/float32/fwd_save-ragged", "triton/gru/H128/float32/fwd"} <= ragged
    assert len(ragged) == 72 and len(ragged - names) == 63


def test_budget_file_names_the_triton_it_holds_for():
    with open(BUDGET_FILE) as f:
        data = json.load(f)
    for version, entry in data["versions"].items():
        assert entry["timed_spill_bytes"] == 0, version  # the suites' plans spill nothing, unless argued:
        for name, allowance in entry.get("allowances", {}).items():
            assert allowance["bytes"] > 0 and len(allowance["why"]) > 20, (version, name)
        assert entry["other_spill_bytes"] >= 0 and entry["ptxas"], version


@needs_ptxas
def test_flagged_plan_lstm_h64_float32_does_not_spill():
    """The plan the first offline audit flagged (16 warps spilled ~290 B with triton 3.6), without lengths and in
    the ragged reverse variant (the lengths tile, per-row planes: the superset of the new kernel code)."""
    items = kernel_check.plans(["lstm"], [64], ["float32"], backends={"triton": impls.get("triton").options},
                               variants=("", "ragged-reverse"))
    assert len(items) == 6
    check(items, 90, {}, budget()["timed_spill_bytes"])


@pytest.mark.slow
@needs_ptxas
def test_timed_plans_fit_sm90():
    limits = budget()
    check(timed_kernels(), 90, limits, limits["timed_spill_bytes"])


@pytest.mark.slow
@needs_ptxas
def test_ragged_suite_plans_fit_sm90():
    limits = budget()
    timed = {k.name for k in timed_kernels()}
    check([k for k in timed_kernels(RAGGED_SUITES) if k.name not in timed], 90, limits, limits["timed_spill_bytes"])


@pytest.mark.slow
@needs_ptxas
@pytest.mark.parametrize("arch", [90, 80])
def test_every_plan_compiles_within_budget(arch):
    timed = {k.name for k in timed_kernels() + timed_kernels(RAGGED_SUITES)}
    limits = budget()
    others = [k for k in kernel_check.plans() if k.name not in timed]
    check(others, arch, {}, limits["other_spill_bytes"])
