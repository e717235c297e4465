"""Numbers that hold from one run to the next: rounds, enough samples, contention around the window."""
from __future__ import annotations

import dataclasses

import pytest

from rnnbench import cli, contention, measure, store, suites, sweep
from rnnbench.config import ConfigError
from rnnbench.jobs import TimingJob, record_key
from rnnbench.suites import SETTINGS

TINY = dict(backend="torch_eager", cell="lstm", batch=4, seq_len=8, input_size=8, hidden=16, mode="train",
            min_time_s=0.0, max_time_s=0.0)


def test_every_round_takes_the_minimum_of_samples_whatever_a_call_costs():
    slow = measure.repeat(lambda: 10.0, min_repeats=5, min_time_s=0.3, max_time_s=2.0)
    assert len(slow.samples_s) == 5  # the cap bounds the extra samples only
    quick = measure.repeat(lambda: 0.01, min_repeats=5, min_time_s=0.3, max_time_s=2.0)
    assert len(quick.samples_s) == 30  # extra samples up to min_time_s


def test_the_grid_is_visited_once_a_round_each_time_shuffled():
    grid = [TimingJob("torch_eager", seq_len=t, hidden=h) for t in (8, 16, 32) for h in (16, 32, 64)]
    jobs = sweep.in_rounds(grid, 3)
    assert len(jobs) == 27 and len({j.key() for j in jobs}) == 27  # round is part of the identity
    visits = [jobs[9 * r:9 * r + 9] for r in range(3)]
    assert all({j.round for j in v} == {r} for r, v in enumerate(visits))
    orders = [[(j.seq_len, j.hidden) for j in v] for v in visits]
    assert all(sorted(o) == sorted((j.seq_len, j.hidden) for j in grid) for o in orders)
    assert len({tuple(o) for o in orders}) == 3  # a different order every round
    assert sweep.in_rounds(grid, 3) == jobs  # and the same one every time


def test_suites_set_their_rounds():
    assert len(sweep.build_configs("cpu")) == 5 * len(sweep.build_configs("cpu", {"rounds": 1}))
    assert {j.round for j in sweep.build_configs("cpu")} == set(range(suites.get("cpu").rounds))
    # the ragged suite's packed-vs-padded verdict is a paired signed-rank test: 8 rounds reach p < 0.01
    assert suites.get("ragged").rounds >= 8


def test_a_record_without_a_round_resumes_as_round_zero():
    job = TimingJob("torch_eager")
    rec = {"kind": "timing", **{k: v for k, v in job.record_fields.items() if k != "round"}, "mode": job.mode}
    assert record_key(rec) == job.key()
    assert record_key({**rec, "round": 2}) == TimingJob("torch_eager", round=2).key()


def test_records_carry_round_repeats_and_contention():
    first = measure.measure(TimingJob(**TINY), memory="skip")
    timing = first[0]
    assert timing["round"] == 0 and timing["repeats"] == len(timing["samples_s"]) >= SETTINGS.min_repeats
    assert isinstance(timing["contention"], float) and timing["contention"] >= 0
    assert timing["contended"] == (timing["contention"] > SETTINGS.contention_threshold)
    assert timing["max_rel_err"] is not None and [r["kind"] for r in first] == ["timing", "stability"]
    later = measure.measure(TimingJob(**TINY, round=1), memory="skip")
    assert [r["kind"] for r in later] == ["timing"]  # the gradient profile and exactness: round 0's
    assert later[0]["round"] == 1 and later[0]["max_rel_err"] is None
    store.check_record({**later[0], "run_id": "r"})


class _Busy:
    """A contention.Window that always saw others use ``cores``."""

    cores = 1.5

    def __enter__(self):
        self.wall_s = 0.1
        return self

    def __exit__(self, *exc):
        pass


def test_a_contended_window_is_measured_again_then_flagged(monkeypatch):
    windows = []

    class Counting(_Busy):
        def __enter__(self):
            windows.append(self)
            return super().__enter__()

    monkeypatch.setattr(contention, "Window", Counting)
    (timing, _) = measure.measure(TimingJob(**TINY), memory="skip")
    assert len(windows) == 1 + SETTINGS.contention_retries
    assert timing["contended"] is True and timing["remeasured"] == SETTINGS.contention_retries
    assert timing["contention"] == 1.5


def test_cli_prints_one_warning_line_with_the_count_first(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RNNBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(contention, "Window", _Busy)
    argv = ["run", "--backends", "torch_eager", "--cells", "lstm", "--batch", "4", "--seq-len", "8", "--hidden",
            "16", "--input-size", "8", "--mode", "forward,train", "--out", str(tmp_path), "--quiet",
            "--no-report", "--machine", "box"]
    assert cli.main(argv) == 0  # one round: in this process, so the busy window is the one measure() sees
    out = capsys.readouterr()
    warnings = [line for line in out.err.splitlines() if line.startswith("warning:")]
    (run_dir,) = (tmp_path / "box").iterdir()
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: contention removed 2 of 2 timing records")
    assert f"run {run_dir.name} (2 of 2)" in warnings[0] and "--threads 1" in warnings[0]
    advice = [line for line in out.err.splitlines() if line.startswith("advice:")]
    threads = {r["threads"] for r in store.read_records(run_dir / store.RECORDS) if r["kind"] == "timing"}
    assert (len(advice) == 1) == (max(threads) > 1)  # more than one thread under load: advise --threads 1


@pytest.mark.parametrize("rounds", [0, -1])
def test_rounds_must_be_positive(rounds, capsys):
    assert cli.main(["run", "--rounds", str(rounds), "--no-report"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_point_predicted_past_the_suite_cap_is_recorded_unsupported_not_run(tmp_path):
    """The crossover surface's cap: the time per token at the previous T of the same curve, times the
    tokens and calls of the next, decides; other curves and uncapped jobs are untouched (no clock)."""
    import numpy as np

    from rnnbench.cost import predicted_point_s

    from .synthetic_results import timing_record

    run = store.Run.create(tmp_path, "synthbox", {"cpu_model": "Synthetic CPU", "gpu": {}, "versions": {}})
    shape = dict(cell="lstm", batch=16, input_size=32, hidden=32, mode="train", min_repeats=3, min_time_s=0.1,
                 max_time_s=0.4)
    # 1 ms per token at T=16 (16 x 16 tokens in 0.256 s a call), measured before the sweep goes on
    run.append(timing_record("torch_cudnn", "lstm", "train", 16, 16, 32, 0.256, np.random.default_rng(0),
                             noise=0.0))
    capped = [TimingJob("torch_cudnn", seq_len=t, max_point_s=60.0, **shape) for t in (64, 1024)]
    other_curve = TimingJob("torch_eager", seq_len=1024, max_point_s=60.0, **shape)  # nothing shorter measured
    uncapped = TimingJob("torch_cudnn", seq_len=4096, **shape)
    written = []
    kept = list(sweep.within_point_cap([*capped, other_curve, uncapped], run, written))
    # T=64: 1024 tokens x 1 ms = 1.02 s a call, 3 timed + 5 untimed: about 8 s; T=1024: 16 x that, past 60 s
    assert predicted_point_s(1e-3, 1024, 3, 0.1, 0.4, True) == pytest.approx(8 * 1.024)
    assert [j.seq_len for j in kept if j.backend == "torch_cudnn"] == [64, 4096]
    assert other_curve in kept
    assert [r["status"] for r in written] == ["unsupported"] and written[0]["seq_len"] == 1024
    assert "predicted 131 s" in written[0]["message"] and "T=16" in written[0]["message"]
    assert record_key(written[0]) == capped[1].key()


def test_a_capped_visit_goes_up_in_t_shuffled_within_each_t():
    grid = [TimingJob("torch_eager", seq_len=t, hidden=h, max_point_s=10.0) for t in (32, 8, 16) for h in (16, 32, 64)]
    jobs = sweep.in_rounds(grid, 2)
    for visit in (jobs[:9], jobs[9:]):
        assert [j.seq_len for j in visit] == sorted(j.seq_len for j in visit)
    assert [j.hidden for j in jobs[:9]] != [j.hidden for j in jobs[9:]]  # still shuffled within a T


# a later round (no memory probe, oracle check or gradient profile), at one thread
FAST = dict(TINY, mode="forward", round=1, thread_limit=1)


class _CrashingJob(TimingJob):
    """A job its worker cannot even read: the worker process exits with a traceback."""

    def to_dict(self) -> dict:
        return {"job": "no such job type"}


def test_a_batch_runs_in_one_process_and_a_crash_or_hang_costs_one_record_not_the_rest():
    first, crashing, last = TimingJob(**FAST), _CrashingJob(**{**FAST, "hidden": 8}), TimingJob(**{**FAST, "hidden": 12})
    middle = TimingJob(**{**FAST, "hidden": 14})
    # sampling for a minute, 2 s after the job before it finished: killed as hung
    hanging = TimingJob(**{**FAST, "hidden": 10, "min_time_s": 60.0, "max_time_s": 60.0, "timeout_s": 2.0})
    out = list(sweep.run_batch_in_child([first, crashing, middle, hanging, last]))
    calibrations = [recs[0] for job, recs in out if job is None]
    finished = [(job, recs) for job, recs in out if job is not None]
    assert [job for job, _ in finished] == [first, crashing, middle, hanging, last]  # each job once, in order
    assert all([r["status"] for r in finished[i][1]] == ["ok"] for i in (0, 2, 4))
    (timeout,) = finished[3][1]
    assert timeout["status"] == "timeout" and "rest of its batch ran in a new one" in timeout["message"]
    assert finished[0][1][0]["threads"] == 1 and finished[0][1][0]["thread_limit"] == 1  # torch took the limit
    (failure,) = finished[1][1]
    assert failure["status"] == "error" and "exited with status 1" in failure["message"]
    assert record_key(failure) == crashing.key()
    # the crash ended the first process, the hang the second: the rest of the list ran, calibrated again, in a third
    assert len(calibrations) == 3 and len({c["pid"] for c in calibrations}) == 3
    assert {(c["backend"], c["round"], c["thread_limit"]) for c in calibrations} == {("torch_eager", 1, 1)}
    for c in calibrations:
        store.check_record({**c, "run_id": "r"})
        assert 0 < c["calibration_matmul_s"] < 1 and 0 < c["calibration_loop_s"] < 1


def test_rounds_run_each_backend_round_in_a_process_of_its_own(tmp_path):
    grid = {"backends": ["torch_eager", "onnxruntime"], "cells": ["gru"], "batch": [2], "seq_len": [4],
            "input_size": [4], "hidden": [8], "mode": ["forward"], "rounds": 3}
    planned, _ = sweep.plan(None, grid, check_memory=False)
    # a round of a backend is one batch, the backends interleaved within each round
    assert [len(b) for b in sweep.batches(planned)] == [1] * 6
    assert [{j.backend for j in planned[2 * r:2 * r + 2]} for r in range(3)] == [set(grid["backends"])] * 3
    jobs, _ = sweep.plan(None, {**grid, "backends": ["torch_eager"], "rounds": 2}, check_memory=False)
    assert sweep.in_processes(jobs) and not sweep.in_processes([dataclasses.replace(j, round=0) for j in jobs])
    # rounds 1 and 2: the test times no memory probe, oracle check or gradient profile (round 0's)
    jobs = [dataclasses.replace(j, round=j.round + 1, min_time_s=0.0, max_time_s=0.0, min_repeats=2) for j in jobs]
    run = store.Run.create(tmp_path, "box", {"cpu_model": "x", "gpu": {}, "versions": {}})
    sweep.run_sweep(run, jobs, "inline", progress=False)
    records = run.records()
    calibrations = [r for r in records if r["kind"] == "calibration"]
    timing = [r for r in records if r["kind"] == "timing"]
    assert len(timing) == 2 and all(r["status"] == "ok" for r in timing)
    assert len({c["pid"] for c in calibrations}) == 2  # two processes
    assert sorted((c["backend"], c["round"]) for c in calibrations) == [("torch_eager", 1), ("torch_eager", 2)]
    assert sweep.pending_jobs(run, jobs) == []  # calibration records are no job's


def test_one_thread_is_set_alike_for_every_framework_and_keeps_other_xla_flags(monkeypatch):
    from impls import runtime

    env = runtime.thread_env(1, environ={"XLA_FLAGS": "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=true"})
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env[runtime.THREADS_ENV] == "1"
    assert env["XLA_FLAGS"].split() == ["--xla_dump_to=/tmp/x", *runtime.XLA_ONE_THREAD]  # one thread flag, not two
    two = runtime.thread_env(2, environ=env)
    assert two["XLA_FLAGS"] == "--xla_dump_to=/tmp/x" and two["OMP_NUM_THREADS"] == "2"  # XLA: its default
    assert "XLA_FLAGS" not in runtime.thread_env(2, environ={})
    # what the JAX runners' threads() hook and ONNX Runtime's session read back in such a process
    monkeypatch.setattr(runtime.os, "environ", env)
    assert runtime.xla_threads() == 1 and runtime.thread_limit() == runtime.intra_op_threads() == 1
    monkeypatch.setattr(runtime.os, "environ", {})
    assert runtime.xla_threads() == runtime.intra_op_threads() == runtime.cores_available()


def test_threads_is_an_axis_of_its_own_processes_and_part_of_the_identity():
    jobs, _ = sweep.plan(None, {"backends": ["torch_eager", "jax_scan"], "cells": ["lstm"], "batch": [2],
                                "seq_len": [4], "hidden": [8], "mode": ["forward"], "threads": [1, 2]},
                         check_memory=False)
    assert sorted(j.thread_limit for j in jobs) == [1, 1, 2, 2] and len({j.key() for j in jobs}) == 4
    assert sweep.in_processes(jobs)  # one round, but XLA fixes its threads at start: a process per value
    assert sorted((b[0].backend, b[0].thread_limit) for b in sweep.batches(jobs)) == [
        ("jax_scan", 1), ("jax_scan", 2), ("torch_eager", 1), ("torch_eager", 2)]
    rec = {"kind": "timing", **jobs[0].record_fields, "mode": "forward"}
    assert record_key(rec) == jobs[0].key() and record_key({**rec, "thread_limit": 0}) != jobs[0].key()
    assert record_key({k: v for k, v in rec.items() if k != "thread_limit"}) == dataclasses.replace(
        jobs[0], thread_limit=0).key()  # a record from before the axis: each framework's default
    with pytest.raises(ConfigError, match="threads 0 is not a positive integer"):
        sweep.plan(None, {"threads": [0]}, check_memory=False)
