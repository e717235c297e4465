"""The measurement harness: timer, memory probe, isolation, stability, store, resume, CLI input."""
import json
import stat
import sys
import time

import numpy as np
import pytest

import impls
from impls import reference
from impls.runner import HostTimer, hook
from impls.runtime import rss_rise
from impls.spec import RNNSpec, init_weights, make_inputs
from rnnbench import cli, store, suites, tasks
from rnnbench.jobs import TimingJob, TrainJob, job_from_dict, record_key
from rnnbench.measure import measure, repeat, summarize
from rnnbench.stability import decay_per_step, gradient_profile, probe_direction
from rnnbench.sweep import build_configs, execute_process, run_in_child, run_sweep

FAST = dict(min_time_s=0.01, max_time_s=0.1, min_repeats=3)


def test_timer_reads_a_known_sleep_between_two_syncs(monkeypatch):
    """The host clock read after the opening sync and after the closing one: a stand-in clock that only
    the call (20 ms) and each sync (the device finishing, 1 ms) advance, so the reading is exact whatever
    else the machine runs (a real 20 ms sleep read 36 ms at load 7)."""
    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    events = []

    def advance(event: str, seconds: float):
        events.append(event)
        now[0] += seconds

    timer = HostTimer(lambda: advance("sync", 0.001))
    timing = repeat(lambda: timer.time(lambda: advance("call", 0.02)), min_repeats=5, min_time_s=0.1)
    assert timing.median_s == pytest.approx(0.021)  # the call and the closing sync, not the opening one
    assert len(timing.samples_s) >= 5 and events[:3] == ["sync", "call", "sync"]
    q1, q3 = np.percentile(timing.samples_s, [25, 75])
    assert timing.iqr_s == pytest.approx(q3 - q1)


MALLOC_PROBE = """
import ctypes, sys
from impls.runtime import fix_malloc_thresholds
if sys.argv[1] == "fixed":
    assert fix_malloc_thresholds()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
block = libc.malloc(8 << 20)  # 8 MiB: above glibc's default mmap threshold (128 KiB), below the fixed one
heap = [line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
lo, hi = (int(x, 16) for x in heap[0].split("-")) if heap else (0, 0)
print("heap" if lo <= block < hi else "mmap")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_prepare_process_fixes_the_allocators_thresholds():
    """Fixed, an 8 MiB buffer comes from the heap in a fresh process too, as it does in one that has
    already freed a large block; by default the first one is mmap'd (what made a sweep's first
    configuration time slower than its later ones)."""
    import subprocess

    def where(mode):
        return subprocess.run([sys.executable, "-c", MALLOC_PROBE, mode], capture_output=True, text=True,
                              check=True).stdout.strip()

    assert (where("default"), where("fixed")) == ("mmap", "heap")


def test_summary_statistics_of_known_samples():
    t = summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (t.median_s, t.iqr_s, t.samples_s) == (3.0, 2.0, [5.0, 1.0, 4.0, 2.0, 3.0])


def test_a_torch_runner_times_with_the_hook_of_its_device():
    """The timer hook picks CUDA events only for a GPU (impls.torch_hooks); a CPU runner gets the host clock."""
    spec = RNNSpec("gru", 3, 4)
    runner = impls.get("torch_eager").build(spec, init_weights(spec), "cpu", "float32")
    assert isinstance(hook(runner, "timer")(), HostTimer)
    assert hook(runner, "memory_probe")().in_process is False and hook(runner, "output_size")() == 4


def test_peak_memory_reads_a_known_allocation():
    size = 100_000_000
    rise = rss_rise(lambda: np.ones(size // 8))  # np.ones touches every page
    assert abs(rise - size) <= 0.1 * size, rise


def test_timing_record_has_the_schema_and_a_stability_record():
    cfg = TimingJob("torch_cudnn", "gru", batch=3, seq_len=6, input_size=4, hidden=5, **FAST)
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
    good = TimingJob("torch_eager", "gru", batch=2, seq_len=4, input_size=3, hidden=4, **FAST)
    raises = TimingJob("torch_eager", "gru", layers=65, batch=2, seq_len=4, input_size=3, hidden=4, **FAST)
    unsupported = TimingJob("torch_eager", "gru", dtype="float16", batch=2, seq_len=4, input_size=3, hidden=4)
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
    (rec,) = run_in_child(TimingJob("torch_eager", batch=2, seq_len=4, input_size=3, hidden=4))
    assert rec["status"] == "error" and "SIGKILL" in rec["message"]


def test_a_hang_becomes_a_timeout_record():
    cfg = TimingJob("torch_eager", "lstm", batch=64, seq_len=2000, input_size=64, hidden=256,
                 min_time_s=30, max_time_s=60, timeout_s=3)
    (rec,) = run_in_child(cfg)
    assert rec["status"] == "timeout" and "3 s" in rec["message"]


def _tiny_jobs():
    return build_configs("quick", {"backends": ["torch_eager", "torch_cudnn"], "cells": ["gru"], "batch": [2],
                                   "seq_len": [3, 5], "hidden": [4], "input_size": [3], "mode": ["forward"]})


def test_resume_completes_an_interrupted_run_without_repeating(tmp_path):
    jobs = [TimingJob.from_dict({**j.to_dict(), **FAST}) for j in _tiny_jobs()]
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
    config = {"backend": "b", "device": "cpu", "dtype": "float32", "cell": "gru", "layers": 1, "batch": 2,
              "seq_len": 3, "input_size": 4, "hidden": 5, "message": ""}
    for i in range(3):
        run.append({"kind": "timing", **config, "status": "error", "median_s": i, "samples_s": np.arange(2.0)})
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
    (["run", "--suite", "huge"], "valid: " + ", ".join(suites.suite_names())),
    (["run", "--frobnicate"], "unrecognized arguments"),
    (["run", "--resume", "/nonexistent/run"], "not a run folder"),
    (["explode"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2_and_no_folder(argv, says, tmp_path, capsys):
    code = cli.main(argv + (["--out", str(tmp_path / "out")] if argv[0] == "run" and "--resume" not in argv else []))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and says in err, err
    assert not (tmp_path / "out").exists()


def test_cli_run_writes_a_run_folder_and_prints_a_table(tmp_path, capsys):
    code = cli.main(["run", "--backends", "torch_cudnn", "--cells", "lstm", "--batch", "2", "--seq-len", "4",
                     "--hidden", "8", "--input-size", "3", "--mode", "forward,train", "--out", str(tmp_path),
                     "--quiet", "--no-report", "--machine", "box", "--table", "full"])
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


def test_a_record_from_measure_alone_is_complete():
    """asv calls measure() directly: its record has the fractions of the machine's ceilings too."""
    (timing,) = measure(TimingJob("torch_eager", "gru", batch=2, seq_len=4, input_size=3, hidden=4, mode="forward",
                                  **FAST), memory="skip")
    store.check_record({"run_id": "r", **timing})
    assert timing["fraction_of_peak"] > 0 and 0 < timing["fraction_of_recurrent_roofline"] <= 1
    assert timing["achieved_flops_per_s"] == pytest.approx(timing["flops"] / timing["median_s"])


def test_the_schema_names_missing_and_mistyped_fields(tmp_path):
    run = store.Run.create(tmp_path, "m", {})
    (good,) = measure(TimingJob("torch_eager", "gru", batch=2, seq_len=4, input_size=3, hidden=4, mode="forward",
                                **FAST), memory="skip")
    run.append(good)
    missing = {k: v for k, v in good.items() if k != "median_s"}
    with pytest.raises(store.RecordError, match="missing median_s"):
        run.append(missing)
    with pytest.raises(store.RecordError, match="batch='2' is a str"):
        run.append({**good, "batch": "2"})
    with pytest.raises(store.RecordError, match="status 'fine'"):
        run.append({**good, "status": "fine"})
    assert len(run.records()) == 1  # nothing of a refused record was written


def test_job_keys_match_their_records_and_survive_the_dict_round_trip():
    timing = TimingJob("torch_eager", "gru", batch=2, seq_len=4, input_size=3, hidden=4)
    (rec,) = [timing.failure("error", "x")]
    assert record_key(rec) == timing.key() and job_from_dict(timing.to_dict()) == timing
    stability = {k: v for k, v in TimingJob("torch_eager", "gru", mode="train").failure("ok", "").items() if k != "mode"}
    assert record_key({**stability, "kind": "stability"}) == TimingJob("torch_eager", "gru", mode="train").key()
    train = TrainJob("adding", "torch_eager", "gru", hidden=8, seq_len=10, steps=2)
    assert record_key(train.failure("timeout", "x")) == train.key() and job_from_dict(train.to_dict()) == train
    other = TrainJob("adding", "torch_eager", "lstm", hidden=8, seq_len=10, steps=2)
    assert other.key() != train.key()  # every identity field counts: the cell among them


def test_help_lists_every_choice(capsys):
    """run/train/report/recommend --help name every task, cell, suite, dtype, mode and executor."""
    import impls.spec

    texts = {}
    for command in ("run", "train", "report", "recommend"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        texts[command] = " ".join(capsys.readouterr().out.split())
    for name in suites.suite_names() + list(impls.spec.CELLS) + list(impls.spec.DTYPES) + ["inline", "process",
                                                                                         "ray", "forward", "train"]:
        assert name in texts["run"], name
    for name in tasks.names() + list(impls.spec.CELLS) + impls.names():
        assert name in texts["train"], name
    assert "RUN_DIR_OR_JSON" in texts["report"] and "default" in texts["report"]
    for name in impls.spec.CELLS:
        assert name in texts["recommend"], name


def test_the_end_of_run_summary_names_the_fastest_per_regime_and_lists_exactness_rows_apart(capsys):
    from rnnbench.report.console import print_end_of_run

    def rec(backend, seq_len, median, **extra):
        return {"kind": "timing", "backend": backend, "backend_kind": extra.pop("kind", "rnn"), "device": "cpu",
                "dtype": "float32", "cell": "lstm", "layers": 1, "batch": 16, "seq_len": seq_len, "input_size": 32,
                "hidden": 64, "mode": "train", "status": "ok", "impl_label": "x", "median_s": median,
                "samples_s": [median] * 5, "run_id": "r", **extra}

    records = [rec("fast", 32, 1.0), rec("slow", 32, 1.5), rec("transformer", 32, 3.0, kind="baseline"),
               rec("fast", 256, 4.0), rec("slow", 256, 2.0),
               rec("triton", 8, 9.0, impl_label="interpreted", max_rel_err=1e-7),
               {**rec("slow", 512, None), "status": "oom", "message": "out of memory"}]
    unsupported = [{**rec("cpu_only", t, None), "status": "unsupported", "message": "no such cell", "round": k}
                   for t in (32, 256) for k in range(3)]
    print_end_of_run(records + unsupported)
    out = capsys.readouterr().out
    # one line per reason, with how many configurations and which T gave it
    assert [line for line in out.splitlines() if "no such cell" in line] == [
        "  cpu_only lstm train: unsupported: no such cell (x6, T 32/256)"]
    assert "7 configuration(s) not ok (1 oom, 6 unsupported)" in out
    short = next(line for line in out.splitlines() if " short " in f" {line} ")
    long = next(line for line in out.splitlines() if " long " in f" {line} ")
    assert short.split()[5:9] == ["fast", "slow", "1.5x", "3x"]  # fastest, runner-up, margin, baseline ratio
    assert long.split()[5:9] == ["slow", "fast", "2x", "-"]
    assert "exactness only" in out and "1 row(s) of triton" in out and "1e-07" in out
    assert "median_ms" not in out


def test_eager_loop_takes_its_step_inputs_from_one_unbind():
    """The hoisted projection is split once: indexing it per step made autograd add a zero-filled
    [T, B, G*H] gradient at every step (O(T^2) traffic; an LSTM train step at B=64 T=256 H=256 took
    6.6 s instead of 0.37 s)."""
    import torch

    T = 12
    spec = RNNSpec("lstm", 3, 4)
    runner = impls.get("torch_eager").build(spec, init_weights(spec), "cpu", "float32")
    x = torch.randn(T, 2, 3, requires_grad=True)
    y, _ = runner.module()(x)
    seen, stack, names = set(), [y.grad_fn], []
    while stack:  # every node of the backward graph once
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(f for f, _ in node.next_functions)
    assert names.count("UnbindBackward0") == 1 and "SelectBackward0" not in names, sorted(set(names))
