"""The report's "Parallel-in-time cells" section on a synthetic run whose crossings are known."""
import numpy as np
import pytest

from .synthetic_results import timing_record

TS = (16, 64, 256, 1024, 4096)
B, H = 16, 256


def per_token(backend: str, T: int) -> float:
    """Seconds per token: the sequential loop constant, the parallel scan a fixed cost spread over T
    (equal to the loop at T=256, to the LSTM at T=768), the transformer growing with T."""
    c = 1.5e-6 * 256
    return {"torch_eager": 2e-6, "torch_scan": c / T + 5e-7, "torch_cudnn": 1e-6,
            "transformer_sdpa": 1e-6 * T / 1024}[backend]


def synthetic_parallel_run(root):
    from rnnbench.store import Run

    rng = np.random.default_rng(0)
    run = Run.create(root, "synthbox", {"cpu_model": "Synthetic CPU", "gpu": {}, "versions": {}})
    models = (("torch_eager", "mingru", "sequential", 2 * H * (H + 1)), ("torch_scan", "mingru", "parallel", 2 * H * (H + 1)),
              ("torch_cudnn", "lstm", None, 4 * H * (2 * H + 2)), ("transformer_sdpa", "lstm", None, 520_000))
    for backend, cell, form, params in models:
        for T in TS:
            rec = timing_record(backend, "lstm", "train", B, T, H, per_token(backend, T) * B * T, rng, noise=0.01,
                                param_count=params, **({"scan_form": form} if form else {}))
            run.append({**rec, "cell": cell, "input_size": H})
    return run


def test_section_finds_the_known_crossings_and_lists_parameters(tmp_path):
    from rnnbench.report import build_report
    from rnnbench.report.parallel import comparisons
    from rnnbench.results import load_inputs

    df = load_inputs([synthetic_parallel_run(tmp_path / "runs").path])
    table = comparisons(df).set_index(["a", "b"])
    assert table.loc[("torch_scan", "torch_eager"), "comparison"] == "parallel vs sequential"
    assert table.loc[("torch_scan", "torch_eager"), "T"] == pytest.approx(256, rel=0.05)
    assert "torch_scan faster above it" in table.loc[("torch_scan", "torch_eager"), "verdict"]
    assert 256 < table.loc[("torch_scan", "torch_cudnn (lstm)"), "T"] < 1024  # 768, read off a log-log line
    assert table.loc[("torch_scan", "torch_cudnn (lstm)"), "comparison"] == "equal width (H)"
    assert table.loc[("torch_eager", "torch_cudnn (lstm)"), "verdict"].startswith("no crossover below T=4096")
    assert table.loc[("torch_eager", "transformer_sdpa (lstm)"), "comparison"] == (
        "transformer with the parameters of the lstm")
    assert ("torch_cudnn", "torch_eager") not in table.index  # the LSTM is compared against, never a subject
    out = build_report(df, tmp_path / "report")
    section = next(s for s in out["sections"] if s.title == "Parallel-in-time cells (minGRU, minLSTM)")
    figures = [b for b in section.blocks if b[0] == "figure"]
    assert len(figures) == 1 and figures[0][1].is_file()
    params = next(b[1] for b in section.blocks if b[0] == "table")
    assert set(params.iloc[:, 0]) == {"torch_eager", "torch_scan", "torch_cudnn", "transformer_sdpa"}
    assert "## Parallel-in-time cells" in out["md"].read_text()


def test_no_section_without_the_new_cells():
    import pandas as pd

    from rnnbench.report.parallel import parallel_section

    assert parallel_section(pd.DataFrame({"cell": ["lstm", "gru"]}), None, False) is None
