"""recommend --measure and recommend_for: synthetic candidates of known speed (tests/synthetic_backends.py,
registered by a fixture) decide the answer, the parity check excludes a wrong one, and a budget too small
to separate equal candidates says so and exits 0."""
import math
import re
import time

import numpy as np
import pytest
import torch

import impls
import rnnbench
from rnnbench import cli
from rnnbench.recommend_measure import measure_interleaved
from rnnbench.store import find_runs, read_records

from impls.convert import from_torch_module

SHAPE = dict(batch=4, seq_len=16, mode="train", device="cpu", dtype="float32")


@pytest.fixture
def synthetic(monkeypatch):
    """Registers test-only backends: name -> options of tests.synthetic_backends.make_backend."""
    added = []

    def register(name, **options):
        monkeypatch.setitem(impls._REGISTRY, name, ("rnn", "tests.synthetic_backends", options))
        added.append(name)

    yield register
    for name in added:
        impls._CACHE.pop(name, None)


def model():
    torch.manual_seed(0)
    return torch.nn.LSTM(8, 16)


def test_picks_the_faster_with_the_known_margin_and_stops_early(synthetic, tmp_path):
    synthetic("synth_fast", seconds=0.02, seed=1)
    synthetic("synth_slow", seconds=0.03, seed=2)  # a fixed 1.5x slower
    synthetic("synth_wrong", seconds=0.01, error=1e-2, seed=3)  # the fastest, but wrong
    spec, weights, _ = from_torch_module(model())
    start = time.perf_counter()
    rec = measure_interleaved(spec, weights, **SHAPE, budget_s=120, backends=["synth_slow", "synth_fast", "synth_wrong"],
                              out=tmp_path, contention_threshold=math.inf, results=())
    wall = time.perf_counter() - start
    assert rec.backend == "synth_fast" and rec.separable, str(rec)
    (margin,) = rec.margins
    assert margin.backend == "synth_slow" and margin.ci_low <= 1.5 <= margin.ci_high, str(rec)
    assert margin.p_value < 0.01 and rec.rounds >= 8
    assert wall < 120 and rec.wall_s < 120  # decided at 8 rounds, long before the budget
    assert [(e.backend, e.stage) for e in rec.excluded] == [("synth_wrong", "parity")]
    assert "synth_wrong: parity" in str(rec) and "off the float64 oracle" in str(rec)
    table = rec.table()
    assert list(table["backend"]) == ["synth_fast", "synth_slow"]
    assert table["ratio_to_winner"].iloc[1] == pytest.approx(margin.ratio)
    # the records joined a run folder like any run: both timed, the wrong one failed with the reason
    (run,) = find_runs([tmp_path])
    records = read_records(run / "records.jsonl")
    fast = [r for r in records if r["backend"] == "synth_fast"]
    assert [r["round"] for r in fast] == list(range(rec.rounds)) and all(r["status"] == "ok" for r in fast)
    assert fast[0]["compile_s"] == pytest.approx(rec.compile_s) and fast[0]["max_rel_err"] < 1e-4
    (wrong,) = [r for r in records if r["backend"] == "synth_wrong"]
    assert wrong["status"] == "error" and "parity" in wrong["message"]
    assert "impls.get('synth_fast').build(spec, weights" in rec.snippet and "runner.module()" in rec.snippet


def test_loaded_rounds_never_decide_no_answer_first_with_the_load_and_exit_3(synthetic, tmp_path, capsys,
                                                                           monkeypatch):
    from rnnbench import recommend_measure

    synthetic("synth_fast", seconds=0.005, seed=1)
    synthetic("synth_slow", seconds=0.02, seed=2)  # 4x slower: any loaded round would "decide" at once
    spec, weights, _ = from_torch_module(model())
    rec = measure_interleaved(spec, weights, **SHAPE, budget_s=15, backends=["synth_fast", "synth_slow"],
                              out=tmp_path, contention_threshold=-1.0, results=())  # every round counts as loaded
    assert rec.backend is None and rec.under_load and rec.loaded_rounds >= 8 and rec.rounds == 0
    first = str(rec).splitlines()[0]
    assert first.startswith("no answer: others used") and "--threads 1" in first and "--budget-s" in first
    (run,) = find_runs([tmp_path])
    timed = [r for r in read_records(run / "records.jsonl") if r["kind"] == "timing"]
    assert timed and all(r["contended"] for r in timed)  # kept, flagged: no report ranks them
    # the CLI: that first line, and its own exit status (documented in --help)
    monkeypatch.setattr(recommend_measure, "measure_interleaved", lambda *a, **k: rec)
    status = cli.main(["recommend", "--cell", "lstm", "--batch", "4", "--seq-len", "16", "--hidden", "16",
                       "--mode", "train", "--device", "cpu", "--measure", "--threads", "1", "--out", str(tmp_path)])
    assert status == cli.EXIT_NO_ANSWER_UNDER_LOAD == 3
    assert capsys.readouterr().out.splitlines()[0] == first
    with pytest.raises(SystemExit):
        cli.main(["recommend", "--help"])
    assert f"{cli.EXIT_NO_ANSWER_UNDER_LOAD} --measure gave no answer" in " ".join(capsys.readouterr().out.split())


def test_no_answer_under_load_is_the_rule_not_the_clock():
    from rnnbench.recommend_measure import no_answer_under_load

    assert no_answer_under_load(8, 5, 1.2, 0.2, 60, 0) is None  # enough quiet rounds: the test decides
    assert no_answer_under_load(3, 0, 0.0, 0.2, 60, 0) is None  # no load: a small budget is "not separable"
    verdict = no_answer_under_load(3, 9, 1.2, 0.2, 60, 0)
    assert "1.2 cores" in verdict and "3 quiet of the 8" in verdict and "--threads 1" in verdict
    assert "--threads 1" not in no_answer_under_load(3, 9, 1.2, 0.2, 60, 1)  # already one thread


class _Quiet:
    """A contention.Window that saw nobody else: the statistics under test, not this machine's load."""

    cores, wall_s = 0.0, 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_equal_candidates_within_a_small_budget_are_not_separable_exit_0(synthetic, tmp_path, capsys, monkeypatch):
    from rnnbench import contention

    monkeypatch.setattr(contention, "Window", _Quiet)  # a loaded round would make it "no answer" (exit 3)
    synthetic("synth_a", seconds=0.02, jitter=0.1, seed=1)
    synthetic("synth_b", seconds=0.02, jitter=0.1, seed=2)
    status = cli.main(["recommend", "--cell", "lstm", "--batch", "4", "--seq-len", "16", "--hidden", "16",
                       "--input-size", "8", "--mode", "train", "--device", "cpu", "--measure", "--budget-s", "30",
                       "--backends", "synth_a,synth_b", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0
    assert "not separable" in out and "synth_a" in out and "synth_b" in out, out
    (spent,) = re.findall(r"time: ([0-9.]+) s of a 30 s budget", out)
    assert float(spent) < 30 + 1  # the budget, the run folder included (its last round may end a little past it)


def test_recommend_for_takes_the_users_module(synthetic, tmp_path):
    synthetic("synth_fast", seconds=0.01, seed=1)
    synthetic("synth_slow", seconds=0.02, seed=2)
    rec = rnnbench.recommend_for(model(), batch=4, seq_len=16, mode="forward", budget_s=60,
                                 backends=["synth_fast", "synth_slow"], out=tmp_path, contention_threshold=math.inf)
    assert rec.backend == "synth_fast" and rec.query["hidden"] == 16 and rec.query["input_size"] == 8
    assert rec.tokens_per_s == pytest.approx(4 * 16 / rec.median_s)
    with pytest.raises(ValueError, match="proj_size=2"):
        rnnbench.recommend_for(torch.nn.LSTM(4, 8, proj_size=2), batch=4, seq_len=16)


@pytest.mark.parametrize("backend", ["torch_eager", "jax_scan"])
def test_recommend_for_writes_nothing_and_its_snippet_runs_as_printed(backend, tmp_path, monkeypatch):
    """Without out= no file appears (the user's working directory stays as it was); the snippet of a
    torch and of a JAX winner runs as printed on a batch_first batch and gives the model's output."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, 16, batch_first=True)
    rec = rnnbench.recommend_for(lstm, batch=3, seq_len=5, mode="forward", budget_s=60, backends=[backend],
                                 contention_threshold=math.inf)
    assert rec.backend == backend and rec.run_dir is None, str(rec)
    assert not any(tmp_path.iterdir()) and "records:" not in str(rec)
    scope = {"model": lstm}
    exec(rec.snippet, scope)  # noqa: S102 - as printed
    x = np.random.default_rng(0).standard_normal((3, 5, 8))  # [B, T, I]: the snippet's stand-in batch
    expected = lstm(torch.as_tensor(x, dtype=torch.float32))[0].detach().numpy()
    y = scope["y"].detach() if isinstance(scope["y"], torch.Tensor) else scope["y"]
    assert np.allclose(np.asarray(y), expected, atol=1e-5)


def test_from_state_dict_and_its_bad_input(synthetic, tmp_path, capsys, monkeypatch):
    from rnnbench import contention

    monkeypatch.setattr(contention, "Window", _Quiet)  # this machine's load is not under test
    synthetic("synth_fast", seconds=0.01, seed=1)
    synthetic("synth_slow", seconds=0.02, seed=2)
    path = tmp_path / "weights.pt"
    torch.save(model().state_dict(), path)
    args = ["recommend", "--cell", "lstm", "--batch", "4", "--seq-len", "16", "--mode", "forward", "--device", "cpu",
            "--budget-s", "60", "--backends", "synth_fast,synth_slow", "--out", str(tmp_path / "runs")]
    inferred = [a for a in args if a not in ("--cell", "lstm", "--device", "cpu")]  # the state dict gives the cell
    assert cli.main(inferred + ["--from-state-dict", str(path)]) == 0
    out = capsys.readouterr().out
    assert "query: lstm forward B=4 T=16 I=8 H=16 layers=1 float32 on cpu" in out, out  # --device: cpu
    assert "synth_fast" in out and "load_state_dict(" in out
    assert cli.main(inferred + ["--measure", "--hidden", "16"]) == 2  # no state dict: --cell and --device needed
    assert "required: --cell, --device" in capsys.readouterr().err
    assert cli.main(args[:2] + ["gru"] + args[3:] + ["--from-state-dict", str(path)]) == 2
    assert "is a lstm" in capsys.readouterr().err
    assert cli.main(args + ["--from-state-dict", str(tmp_path / "missing.pt")]) == 2
    assert cli.main(args + ["--measure", "--hidden", "16", "--budget-s", "0"]) == 2
    assert "--budget-s: 0 is not positive" in capsys.readouterr().err


def test_inference_and_training_candidates_apart():
    """A backend without train never competes for a training answer; one whose runner is not ranked
    (flashrnn's reference loop on a CPU) never enters a ranking."""
    import pandas as pd

    from impls.spec import RNNSpec
    from rnnbench.recommend_measure import candidate_names
    from rnnbench.results import speed_rows

    spec = RNNSpec("lstm", 8, 16)
    train, excluded = candidate_names(spec, "train", "cpu", "float32")
    forward, _ = candidate_names(spec, "forward", "cpu", "float32")
    if impls.available("onnxruntime")[0]:
        assert "onnxruntime" in forward and "onnxruntime" not in train
        assert any(e.backend == "onnxruntime" and "not train" in e.reason for e in excluded)
    assert "flashrnn" not in train and "flashrnn" not in forward
    rows = pd.DataFrame({"kind": "timing", "status": "ok", "impl_label": ["aten", "flashrnn-vanilla", "x"],
                         "ranked": [True, False, None], "median_s": 1.0, "contended": False})
    assert list(speed_rows(rows)["impl_label"]) == ["aten", "x"]
