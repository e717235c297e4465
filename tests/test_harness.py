"""The measurement harness: timer, memory probe, isolation, stability, store, resume, CLI input."""
import json
import stat
import sys
import time

import numpy as np
import pytest

import impls
from impls import reference
from impls.spec import RNNSpec, init_weights, make_inputs
from rnnbench import cli, store
from rnnbench.config import Config
from rnnbench.measure import measure, rss_rise, time_callable
from rnnbench.stability import decay_per_step, gradient_profile, probe_direction
from rnnbench.sweep import build_configs, execute_process, run_in_child, run_sweep

FAST = dict(min_time_s=0.01, max_time_s=0.1, min_repeats=3)


def test_timer_reads_a_known_sleep():
    timing, first = time_callable(lambda: time.sleep(0.02), min_repeats=5, min_time_s=0.1)
    assert 0.02 <= timing.median_s < 0.03
    assert len(timing.samples_s) >= 5 and timing.iqr_s >= 0


def test_peak_memory_reads_a_known_allocation():
    size = 100_000_000
    rise = rss_rise(lambda: np.ones(size // 8))  # np.ones touches every page
    assert abs(rise - size) <= 0.1 * size, rise


def test_timing_record_has_the_schema_and_a_stability_record():
    cfg = Config("torch_cudnn", "gru", batch=3, seq_len=6, input_size=4, hidden=5, **FAST)
    timing, stab = measure(cfg, memory="fresh")
    for field in store.COMMON_FIELDS[1:] + ("mode", "median_s", "iqr_s", "samples_s", "compile_s", "tokens_per_s",
                                             "peak_bytes", "peak_method", "max_rel_err"):
        assert field in timing, field
    assert timing["status"] == "ok" and timing["max_rel_err"] < 1e-5
    assert timing["tokens_per_s"] == pytest.approx(3 * 6 / timing["median_s"])
    assert stab["kind"] == "stability" and len(stab["grad_profile"]) == 6


def test_gradient_profile_matches_the_oracle():
    spec = RNNSpec("lstm", 3, 5, 2)
    weights = init_weights(spec)
    x, _, _ = make_inputs(spec, 9, 2)
    runner = impls.get("torch_eager").build(spec, weights, "cpu", "float64")
    got = gradient_profile(runner, x, 5)
    dy = np.zeros((9, 2, 5))
    dy[-1] = probe_direction(2, 5)
    dx = reference.forward_backward(spec, weights, x, None, dy)["x"]
    want = np.sqrt((dx.reshape(9, -1) ** 2).sum(1))
    np.testing.assert_allclose(got["grad_profile"], want, rtol=1e-10)
    assert got["grad_decay_per_step"] == pytest.approx((np.log10(want[0]) - np.log10(want[-1])) / 8)
    assert got["nan_count"] == 0 and got["inf_count"] == 0


def test_decay_is_signed_and_profile_downsampled():
    assert decay_per_step(np.array([1e-4, 1e-3, 1e-2])) == pytest.approx(-1.0)  # vanishing going back
    assert decay_per_step(np.array([1.0, 0.1])) == pytest.approx(1.0)
    # early steps underflowed to 0 in float32: the slope starts at the first non-zero step
    assert decay_per_step(np.array([0.0, 0.0, 1e-6, 1e-4, 1e-2])) == pytest.approx(-2.0)
    assert decay_per_step(np.array([0.0, 0.0, 1.0])) is None
    from rnnbench.stability import downsample

    assert len(downsample(np.arange(1000.0))) <= 64


def test_a_failing_configuration_becomes_a_record_and_the_sweep_goes_on():
    good = Config("torch_eager", "gru", batch=2, seq_len=4, input_size=3, hidden=4, **FAST)
    raises = Config("torch_eager", "gru", layers=65, batch=2, seq_len=4, input_size=3, hidden=4, **FAST)
    unsupported = Config("torch_eager", "gru", dtype="float16", batch=2, seq_len=4, input_size=3, hidden=4)
    out = {job.layers if job is not unsupported else "fp16": recs for job, recs in
           execute_process([raises, unsupported, good])}
    assert out[65][0]["status"] == "error" and "num_layers" in out[65][0]["message"]
    assert out["fp16"][0]["status"] == "unsupported"
    assert out[1][0]["status"] == "ok"


def test_a_killed_worker_becomes_a_record(tmp_path, monkeypatch):
    killer = tmp_path / "python"
    killer.write_text("#!/bin/sh\nkill -9 $$\n")
    killer.chmod(killer.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(sys, "executable", str(killer))
    (rec,) = run_in_child(Config("torch_eager", batch=2, seq_len=4, input_size=3, hidden=4))
    assert rec["status"] == "error" and "SIGKILL" in rec["message"]


def test_a_hang_becomes_a_timeout_record():
    cfg = Config("torch_eager", "lstm", batch=64, seq_len=2000, input_size=64, hidden=256,
                 min_time_s=30, max_time_s=60, timeout_s=3)
    (rec,) = run_in_child(cfg)
    assert rec["status"] == "timeout" and "3 s" in rec["message"]


def _tiny_jobs():
    return build_configs("quick", {"backends": ["torch_eager", "torch_cudnn"], "cells": ["gru"], "batch": [2],
                                   "seq_len": [3, 5], "hidden": [4], "input_size": [3], "mode": ["forward"]})


def test_resume_completes_an_interrupted_run_without_repeating(tmp_path):
    jobs = [Config.from_dict({**j.to_dict(), **FAST}) for j in _tiny_jobs()]
    run = store.Run.create(tmp_path, "testmachine", {"jobs": [j.to_dict() for j in jobs]})
    run_sweep(run, jobs[:2], progress=False)  # "interrupted" after two configurations
    with open(run.path / store.RECORDS, "a") as f:
        f.write('{"run_id": "torn')  # a crash in the middle of a write
    resumed = store.Run.resume(run.path)
    assert len(resumed.records()) == 2
    run_sweep(resumed, jobs, progress=False)
    keys = [(r["backend"], r["seq_len"]) for r in resumed.records()]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == len(jobs)
    assert (run.path / store.RECORDS).read_bytes().endswith(b"\n")


def test_appends_are_whole_lines_and_load_joins_the_environment(tmp_path):
    run = store.Run.create(tmp_path, "m1", {"cpu_model": "test cpu", "versions": {"torch": "9.9"}})
    for i in range(3):
        run.append({"kind": "timing", "backend": "b", "median_s": i, "samples_s": np.arange(2.0)})
    lines = (run.path / store.RECORDS).read_text().splitlines()
    assert [json.loads(line)["median_s"] for line in lines] == [0, 1, 2]
    df = store.load([tmp_path])
    assert list(df["cpu_model"].unique()) == ["test cpu"] and list(df["version_torch"].unique()) == ["9.9"]
    assert set(df["run_id"]) == {run.run_id} and json.loads((run.path / "run.json").read_text())["machine"] == "m1"


@pytest.mark.parametrize("argv, says", [
    (["run", "--backends", "torch_eager,nope"], "valid: torch_eager"),
    (["run", "--cells", "lstm,transformer"], "valid: rnn_tanh, lstm, gru"),
    (["run", "--dtype", "float8"], "valid: float32, float64, bfloat16, float16"),
    (["run", "--device", "tpu"], "cpu, cuda, cuda:N"),
    (["run", "--device", "cuda:3"], "not available here"),
    (["run", "--batch", "0"], "not positive"),
    (["run", "--seq-len", "ten"], "not an integer"),
    (["run", "--mode", "infer"], "valid: forward, train, step"),
    (["run", "--suite", "huge"], "valid: quick, cpu, kernels, tasks"),
    (["run", "--frobnicate"], "unrecognized arguments"),
    (["run", "--resume", "/nonexistent/run"], "not a run folder"),
    (["explode"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2_and_no_folder(argv, says, tmp_path, capsys):
    code = cli.main(argv + (["--out", str(tmp_path / "out")] if argv[0] == "run" else []))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and says in err, err
    assert not (tmp_path / "out").exists()


def test_cli_run_writes_a_run_folder_and_prints_a_table(tmp_path, capsys):
    code = cli.main(["run", "--backends", "torch_cudnn", "--cells", "lstm", "--batch", "2", "--seq-len", "4",
                     "--hidden", "8", "--input-size", "3", "--mode", "forward,train", "--out", str(tmp_path),
                     "--quiet", "--no-report", "--machine", "box"])
    out = capsys.readouterr().out
    assert code == 0 and "median_ms" in out and "tokens_per_s" in out
    (run_dir,) = (tmp_path / "box").iterdir()
    records = store.read_records(run_dir / store.RECORDS)
    assert {r["kind"] for r in records} == {"timing", "stability"}
    assert all(r["status"] == "ok" and r["peak_bytes"] is not None for r in records if r["kind"] == "timing")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["versions"]["torch"] and info["cpu_model"] and "commit" in info and len(info["jobs"]) == 2


def test_cli_list_names_every_backend(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in impls.names():
        assert name in out
