"""rnnbench recommend: the right backend on synthetic results whose answer is known, "not enough
data" where the results cannot decide, and the same as a function of the package."""
import re
import subprocess
import sys

import numpy as np
import pytest

import rnnbench
from rnnbench import cli
from rnnbench.config import ConfigError
from rnnbench.recommend import Recommendation, recommend
from rnnbench.store import Run

from .synthetic_results import COST, make_run, model_seconds, timing_record

RNNS = [b for b, (kind, *_) in COST.items() if kind == "rnn"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    make_run(root, rounds=8)  # a paired signed-rank test needs 8 rounds
    return root


def fastest(cell, mode, batch, seq_len, hidden):
    return min(RNNS, key=lambda b: model_seconds(b, cell, mode, batch, seq_len, hidden))


@pytest.mark.parametrize("cell,mode,batch,seq_len,hidden", [
    ("lstm", "train", 64, 256, 128),  # big matmuls: jax_scan's cheaper arithmetic wins
    ("lstm", "forward", 16, 16, 64),  # small ones: torch_cudnn's cheap steps win
    ("gru", "train", 16, 64, 64),
])
def test_exact_match_picks_the_fastest_backend(results, cell, mode, batch, seq_len, hidden):
    rec = recommend(cell, batch, seq_len, mode, "cpu", hidden=hidden, input_size=32, results=[results])
    want = fastest(cell, mode, batch, seq_len, hidden)
    assert rec.decided and rec.backend == want, str(rec)
    times = {b: model_seconds(b, cell, mode, batch, seq_len, hidden) for b in RNNS}
    runner_up = min((b for b in RNNS if b != want), key=times.get)
    assert rec.runner_up == runner_up
    assert rec.margin == pytest.approx(times[runner_up] / times[want], rel=0.05)
    assert rec.distance == 0 and len(rec.relied_on) == 1 and rec.relied_on[0]["differs"] == "exact"
    (measured,) = rec.measured
    assert measured["median_s"] == pytest.approx(times[want], rel=0.05)
    assert measured["tokens_per_s"] == pytest.approx(batch * seq_len / measured["median_s"])
    text = str(rec)
    assert f"use: {want}" in text and "exact match" in text and f"runner-up {runner_up}" in text
    assert "transformer baseline transformer_sdpa" in text  # what the transformer costs at that shape


def test_nearest_configurations_and_how_far_they_are(results):
    """T=128 was not measured: T=64 and T=256 are each one doubling away, and agree."""
    rec = recommend("lstm", 16, 128, "forward", "cpu", hidden=64, results=[results])
    assert rec.decided and rec.backend == fastest("lstm", "forward", 16, 128, 64) == "torch_cudnn"
    assert rec.distance == pytest.approx(1.0)
    assert sorted(r["seq_len"] for r in rec.relied_on) == [64, 256]
    assert sorted(r["differs"] for r in rec.relied_on) == ["T 256 (x2)", "T 64 (x0.5)"]
    assert "1 doublings from the query" in str(rec)


def test_far_from_every_measurement_is_not_enough_data(results):
    rec = recommend("lstm", 16, 8192, "train", "cpu", hidden=64, results=[results])
    assert not rec.decided and rec.backend is None
    assert "no T above the query's T=8192 was measured (measured: 16, 64, 256)" in rec.reason
    assert "rnnbench recommend --measure --cell lstm --mode train --batch 16 --seq-len 8192" in rec.reason
    assert str(rec).splitlines()[2].startswith("not enough data: ")


def test_too_far_between_neighbours_is_not_enough_data(tmp_path):
    rng = np.random.default_rng(0)
    run_of(tmp_path, [timing_record(b, "lstm", "train", 16, t, 64, s * t, rng, round=r) for r in range(8)
                      for t in (16, 1024) for b, s in (("torch_cudnn", 1e-4), ("torch_eager", 3e-4))])
    rec = recommend("lstm", 16, 128, "train", "cpu", results=[tmp_path])
    assert not rec.decided and "3 doublings from the query (limit 2)" in rec.reason


def test_one_side_only_is_never_extrapolated(tmp_path):
    """T=48 was not measured and nothing below it was: T=64 alone does not decide it."""
    rng = np.random.default_rng(0)
    run_of(tmp_path, [timing_record(b, "lstm", "train", 16, t, 64, s * t, rng, round=r) for r in range(8)
                      for t in (64, 256) for b, s in (("torch_cudnn", 1e-4), ("torch_eager", 3e-4))])
    rec = recommend("lstm", 16, 48, "train", "cpu", hidden=64, results=[tmp_path])
    assert not rec.decided and "no T below the query's T=48 was measured (measured: 64, 256)" in rec.reason
    assert "recommend --measure" in rec.reason
    assert recommend("lstm", 16, 64, "train", "cpu", hidden=64, results=[tmp_path]).backend == "torch_cudnn"


def eight_rounds(backend, cell, mode, batch, seq_len, hidden, seconds, rng, **kw):
    return [timing_record(backend, cell, mode, batch, seq_len, hidden, seconds, rng, round=r, round_noise=0.02, **kw)
            for r in range(8)]


def test_no_measurement_of_the_regime_is_not_enough_data(results):
    rec = recommend("rnn_tanh", 16, 64, "train", "cpu", results=[results])
    assert not rec.decided and "no finished timing of rnn_tanh train float32 on cpu" in rec.reason
    assert not recommend("lstm", 16, 64, "train", "cuda", results=[results]).decided


def run_of(tmp_path, records, machine="m") -> Run:
    run = Run.create(tmp_path, machine, {})
    for r in records:
        run.append(r)
    return run


def test_backends_within_noise_is_not_enough_data(tmp_path):
    rng = np.random.default_rng(0)
    run_of(tmp_path, [rec for b in ("torch_cudnn", "torch_eager")
                      for rec in eight_rounds(b, "lstm", "train", 16, 64, 64, 0.01, rng)])
    rec = recommend("lstm", 16, 64, "train", "cpu", results=[tmp_path])
    assert not rec.decided and "within noise" in rec.reason and len(rec.relied_on) == 1
    assert "signed-rank p = " in rec.reason


def test_one_backend_is_not_enough_data(tmp_path):
    run_of(tmp_path, [timing_record("torch_eager", "lstm", "train", 16, 64, 64, 0.01, np.random.default_rng(0))])
    rec = recommend("lstm", 16, 64, "train", "cpu", results=[tmp_path])
    assert not rec.decided and "only torch_eager measured" in rec.reason


def test_too_few_rounds_is_not_enough_data(tmp_path):
    """5x apart, 50 samples each, but 7 rounds: the smallest signed-rank p is 2/128, above 0.01."""
    rng = np.random.default_rng(0)
    run_of(tmp_path, [timing_record(b, "gru", "forward", 16, 64, 64, s, rng, repeats=50, round=r)
                      for r in range(7) for b, s in (("torch_cudnn", 0.01), ("torch_eager", 0.05))])
    rec = recommend("gru", 16, 64, "forward", "cpu", results=[tmp_path])
    assert not rec.decided and "too few rounds" in rec.reason and "7 here" in rec.reason
    assert "recommend --measure" in rec.reason


def test_disagreeing_neighbours_is_not_enough_data(tmp_path):
    rng = np.random.default_rng(0)
    seconds = {"torch_cudnn": {32: 1.0, 128: 4.0}, "torch_eager": {32: 2.0, 128: 2.0}}
    run_of(tmp_path, [timing_record(b, "gru", "train", 16, t, 64, s, rng) for b, by_t in seconds.items()
                      for t, s in by_t.items()])
    rec = recommend("gru", 16, 64, "train", "cpu", results=[tmp_path])
    assert not rec.decided and "disagree" in rec.reason
    # each neighbour's winner and margin, not an average of them
    margins = re.findall(r"(\w+) fastest at B=16 T=(\d+) I=32 H=64 layers=1 \(x([\d.]+) over (\w+)\)", rec.reason)
    assert [(w, t, o) for w, t, _, o in margins] == [("torch_cudnn", "32", "torch_eager"),
                                                     ("torch_eager", "128", "torch_cudnn")]
    assert all(float(m) == pytest.approx(2, rel=0.1) for _, _, m, _ in margins)
    assert "recommend --measure" in rec.reason


def test_interpreted_and_failed_records_are_never_recommended(tmp_path):
    rng = np.random.default_rng(0)
    run_of(tmp_path, [
        *eight_rounds("torch_cudnn", "lstm", "train", 16, 64, 64, 0.02, rng),
        *eight_rounds("torch_eager", "lstm", "train", 16, 64, 64, 0.04, rng),
        timing_record("triton_fused", "lstm", "train", 16, 64, 64, 0.0001, rng, impl_label="interpreted"),
        {**timing_record("jax_scan", "lstm", "train", 16, 64, 64, 0.0001, rng), "status": "unsupported",
         "message": "no jax here", "median_s": None},
    ])
    rec = recommend("lstm", 16, 64, "train", "cpu", results=[tmp_path])
    assert rec.backend == "torch_cudnn" and rec.runner_up == "torch_eager"
    assert any(n.startswith("jax_scan at B=16 T=64") and "unsupported" in n for n in rec.notes)


def test_several_machines_use_the_one_with_most_results_and_say_so(tmp_path):
    rng = np.random.default_rng(0)
    run_of(tmp_path, [rec for t in (16, 64) for b, s in (("torch_cudnn", 1e-4), ("torch_eager", 3e-4))
                      for rec in eight_rounds(b, "lstm", "train", 16, t, 64, s * t, rng)], machine="big")
    run_of(tmp_path, [timing_record(b, "lstm", "train", 16, 64, 64, s, rng)
                      for b, s in (("torch_cudnn", 0.5), ("torch_eager", 0.1))], machine="small")
    rec = recommend("lstm", 16, 64, "train", "cpu", results=[tmp_path])
    assert rec.machine == "big" and rec.backend == "torch_cudnn"
    assert any("2 machines (big, small)" in n for n in rec.notes)


def test_contended_records_are_left_out_and_counted(tmp_path):
    rng = np.random.default_rng(0)
    run_of(tmp_path, [*eight_rounds("torch_cudnn", "lstm", "train", 16, 64, 64, 0.02, rng),
                      *eight_rounds("torch_eager", "lstm", "train", 16, 64, 64, 0.04, rng),
                      *eight_rounds("jax_scan", "lstm", "train", 16, 64, 64, 0.001, rng, contention=1.3,
                                    contended=True)])
    rec = recommend("lstm", 16, 64, "train", "cpu", results=[tmp_path])
    assert rec.backend == "torch_cudnn" and rec.runner_up == "torch_eager"  # jax_scan's times are not trusted
    assert "8 contended timing record(s) left out" in "\n".join(rec.notes)


def test_the_package_exposes_recommend_as_a_function(results):
    first = rnnbench.recommend("lstm", 64, 256, "train", "cpu", hidden=128, results=[results])
    import rnnbench.recommend as module  # importing the submodule must not take the function away

    second = rnnbench.recommend("lstm", 64, 256, "train", "cpu", hidden=128, results=[results])
    assert isinstance(first, Recommendation) and first.backend == second.backend == module.recommend(
        "lstm", 64, 256, "train", "cpu", hidden=128, results=[results]).backend


def test_importing_rnnbench_stays_light():
    code = "import sys, rnnbench; print(sorted(m for m in ('pandas', 'torch', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("kwargs,message", [
    (dict(cell="lstmm"), "unknown cell 'lstmm'; valid: rnn_tanh, lstm, gru"),
    (dict(mode="both"), "unknown mode 'both'; valid: forward, train, step"),
    (dict(dtype="int8"), "unknown dtype 'int8'; valid:"),
    (dict(batch=0), "batch must be a positive integer"),
    (dict(device="tpu"), "device"),
])
def test_bad_queries_raise_config_error(results, kwargs, message):
    query = dict(cell="lstm", batch=16, seq_len=64, mode="train", device="cpu", results=[results])
    query.update(kwargs)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        recommend(**query)


def test_cli_prints_the_recommendation(results, capsys, tmp_path):
    argv = ["recommend", "--cell", "lstm", "--batch", "64", "--seq-len", "256", "--hidden", "128", "--mode", "train",
            "--device", "cpu", "--results", str(results)]
    assert cli.main(argv) == 0
    assert "use: jax_scan" in capsys.readouterr().out
    assert cli.main(argv[:-1] + [str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere is not a run folder" in err

