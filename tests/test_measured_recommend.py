"""recommend --measure and recommend_for: synthetic candidates of known speed (tests/synthetic_backends.py,
registered by a fixture) decide the answer, the parity check excludes a wrong one, and a budget too small
to separate equal candidates says so and exits 0."""
import math
import re
import time

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


@pytest.mark.slow
def test_loaded_rounds_are_dropped_counted_and_the_answer_says_so(synthetic, tmp_path):
    synthetic("synth_fast", seconds=0.01, seed=1)
    synthetic("synth_slow", seconds=0.015, seed=2)
    spec, weights, _ = from_torch_module(model())
    rec = measure_interleaved(spec, weights, **SHAPE, budget_s=30, backends=["synth_fast", "synth_slow"],
                              out=tmp_path, contention_threshold=-1.0, results=())  # every round counts as loaded
    assert rec.loaded_rounds >= 8 and rec.loaded_rounds == rec.rounds
    assert any("loaded ones included" in n for n in rec.notes)
    assert "of them under load" in str(rec)


def test_equal_candidates_within_a_small_budget_are_not_separable_exit_0(synthetic, tmp_path, capsys):
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


def test_from_state_dict_and_its_bad_input(synthetic, tmp_path, capsys):
    synthetic("synth_fast", seconds=0.01, seed=1)
    synthetic("synth_slow", seconds=0.02, seed=2)
    path = tmp_path / "weights.pt"
    torch.save(model().state_dict(), path)
    args = ["recommend", "--cell", "lstm", "--batch", "4", "--seq-len", "16", "--mode", "forward", "--device", "cpu",
            "--budget-s", "60", "--backends", "synth_fast,synth_slow", "--out", str(tmp_path / "runs")]
    assert cli.main(args + ["--from-state-dict", str(path)]) == 0
    out = capsys.readouterr().out
    assert "I=8 H=16" in out and "synth_fast" in out and "load_state_dict(" in out
    assert cli.main(args[:2] + ["gru"] + args[3:] + ["--from-state-dict", str(path)]) == 2
    assert "is a lstm" in capsys.readouterr().err
    assert cli.main(args + ["--from-state-dict", str(tmp_path / "missing.pt")]) == 2
    assert cli.main(args + ["--measure", "--hidden", "16", "--budget-s", "0"]) == 2
    assert "--budget-s must be a positive" in capsys.readouterr().err


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
