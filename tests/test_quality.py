"""Time to quality and memory depth (issue 29): a run stops at its task's target or its budget and says
which; a depth walk stops at the first length it misses and retrains the boundary with more seeds;
the quality suite's grid and report sections."""
import dataclasses
import json

import pandas as pd
import pytest

from rnnbench import report, results, store, suites
from rnnbench.jobs import DepthJob, TrainJob, job_from_dict, record_key
from rnnbench.report.quality import depth_table, quality_table
from rnnbench.sweep import build_jobs, quality_jobs
from rnnbench.train import run_training, time_to_quality
from rnnbench import tasks

# adding at T=5, H=32 B=32: an LSTM passes MSE 0.01 within 150 steps (its curve falls like T=10's)
SMALL = dict(hidden=32, batch=32, eval_every=10, steps=150)


def checked(records):
    for r in records:
        store.check_record(json.loads(json.dumps({**r, "run_id": "t"})))
    return records


def test_a_run_stops_at_its_target_and_says_when():
    recs = checked(run_training(TrainJob("adding", "torch_cudnn", seq_len=5, stop_at_target=True, **SMALL)))
    last = recs[-1]
    assert last["target_reached"] is True and last["step"] == last["steps_to_target"] < 150
    assert last["steps_to_target"] % 10 == 0  # found at an evaluation
    assert last["metric"] <= last["target_metric"] == tasks.get("adding").target
    assert all(r["metric"] > r["target_metric"] for r in recs[:-1] if r["metric"] is not None)
    assert 0 < last["time_to_target_s"] <= last["train_s"] + 1e-12
    assert all("target_reached" not in r for r in recs[:-1])  # the verdict is the last record's
    assert not last["depth_walk"]


def test_a_run_that_misses_says_not_reached_and_spends_the_larger_budget(monkeypatch):
    # an MSE below 0 is never reached, whatever a quiet machine fits into the seconds budget
    monkeypatch.setattr(tasks.TASKS["adding"], "target", -1.0)
    recs = checked(run_training(TrainJob("adding", "torch_cudnn", seq_len=5, hidden=8, batch=4, steps=2,
                                         budget_s=1.0, stop_at_target=True)))
    last = recs[-1]
    assert last["target_reached"] is False and last["steps_to_target"] is None and last["time_to_target_s"] is None
    spent = sum(r["step_s"] for r in recs)
    assert last["step"] >= 2 and spent >= 1.0  # both budgets spent: the larger binds (on a loaded machine two
    assert last["step"] == 2 or spent - last["step_s"] < 1.0  # steps may take the second), and no step past it
    assert last["metric"] is not None


def test_time_to_quality_counts_the_first_steps_compile_apart():
    v = time_to_quality([5.0, 1.0, 1.0, 3.0, 1.0], reached_at=3)
    assert v["compile_s"] == pytest.approx(4.0)  # the first step's excess over the later steps' median
    assert v["time_to_target_s"] == pytest.approx(3.0) and v["train_s"] == pytest.approx(7.0)
    assert time_to_quality([2.0], None) == {"target_reached": False, "steps_to_target": None,
                                            "time_to_target_s": None, "compile_s": 0.0, "train_s": 2.0}


def test_depth_walk_stops_at_the_first_miss_and_retrains_the_boundary():
    job = DepthJob("adding", "torch_cudnn", "lstm", seq_lens="5,120,600", seeds=2, **SMALL)
    job.validate()
    recs = checked(job.run(fresh_process=False))
    verdict = recs[-1]
    assert verdict["kind"] == "depth" and record_key(verdict) == job.key()
    assert verdict["tried_seq_lens"] == [5, 120] and verdict["reached_seq_lens"] == [5]  # 600 never tried
    assert verdict["boundary_seq_len"] == 5 and verdict["boundary_runs"] == 2
    finals = [r for r in recs if "target_reached" in r]
    assert [(r["seq_len"], r["seed"]) for r in finals] == [(5, 0), (120, 0), (5, 1)]
    assert verdict["boundary_reached"] == 1 + finals[2]["target_reached"]
    assert all(r["depth_walk"] for r in finals)  # told apart from the same run on its own (time to quality)
    (profile,) = [r for r in recs if r["kind"] == "stability"]
    assert profile["seq_len"] == 120 and len(profile["grad_profile"]) > 1
    assert verdict["grad_decay_per_step"] == profile["grad_decay_per_step"] < 0  # an LSTM's gradient fades
    assert job_from_dict(job.to_dict()) == job


def test_bad_depth_lengths_are_config_errors():
    from rnnbench.config import ConfigError

    for bad in ("50,10", "10,x", ""):
        with pytest.raises(ConfigError, match="ascending"):
            DepthJob("copy", "torch_cudnn", seq_lens=bad).validate()


def test_quality_suite_grid_and_one_more_model_is_one_more_entry():
    jobs = build_jobs("quality")
    train = [j for j in jobs if isinstance(j, TrainJob)]
    depth = [j for j in jobs if isinstance(j, DepthJob)]
    grid = suites.QUALITY
    assert {(j.task, j.backend) for j in train} == {(t, b) for t in tasks.names() for b in grid.backends}
    for j in train + depth:
        assert j.steps == grid.step_factor * tasks.TASKS[j.task].lstm_steps_to_target and j.budget_s == 60
    assert all(j.stop_at_target for j in train)
    assert {(j.task, j.cell, j.backend) for j in depth} == {(t, c, b) for t in grid.depth_tasks
                                                           for c, b in grid.depth_models}
    assert "transformer_sdpa" in {j.backend for j in depth} and {"rnn_tanh", "lstm", "gru"} <= {j.cell for j in depth}
    wider = dataclasses.replace(grid, depth_models=grid.depth_models + (("gru", "torch_eager"),))
    assert len(quality_jobs({}, wider)) == len(jobs) + len(grid.depth_tasks)
    assert len({j.key() for j in jobs}) == len(jobs)


def _verdict(backend, steps, seconds, reached=True):
    return {"run_id": "r", "device": "cpu", "dtype": "float32", "task": "adding", "seq_len": 50, "cell": "lstm",
            "backend": backend, "seed": 0, "target_metric": 0.01, "target_reached": reached,
            "steps_to_target": steps if reached else None, "time_to_target_s": seconds if reached else None,
            "step": steps, "train_s": seconds, "depth_walk": False, "compile_s": 0.0, "steps": 150, "budget_s": 60.0}


def test_seconds_are_called_speed_only_where_steps_agree():
    table = quality_table(pd.DataFrame([_verdict("torch_cudnn", 100, 10.0), _verdict("jax_scan", 108, 5.0),
                                        _verdict("torch_eager", 150, 30.0),
                                        _verdict("transformer_sdpa", 400, 60.0, reached=False)]))
    vs = dict(zip(table["backend"], table["vs torch_cudnn"]))
    assert vs["jax_scan"] == "0.50x the seconds"
    assert "not a speed" in vs["torch_eager"] and vs["transformer_sdpa"] == ""
    assert dict(zip(table["backend"], table["steps"]))["transformer_sdpa"] == "not reached in 400"


@pytest.mark.slow  # three training runs and a walk, then the whole report with its figures
def test_report_has_the_quality_sections(tmp_path):
    run = store.Run.create(tmp_path, "m", {})
    for rec in run_training(TrainJob("adding", "torch_cudnn", seq_len=5, stop_at_target=True, **SMALL)) + \
            run_training(TrainJob("adding", "torch_eager", seq_len=5, stop_at_target=True, **SMALL)) + \
            DepthJob("adding", "torch_cudnn", "gru", seq_lens="5,120", seeds=1, **SMALL).run(False):
        run.append(rec)
    out = report.build_report(results.load_inputs([run.path]), tmp_path / "report")
    sections = {s.title: s for s in out["sections"]}
    quality = [b for b in sections["Time to quality"].blocks if b[0] == "table"][0][1]
    assert set(quality["backend"]) == {"torch_cudnn", "torch_eager"}
    assert "x the seconds" in quality.set_index("backend").loc["torch_eager", "vs torch_cudnn"]  # same curve
    depth = [b for b in sections["Memory depth"].blocks if b[0] == "table"][0][1]
    assert depth.iloc[0]["T=5"] == "1/1" and depth.iloc[0]["T=120"] == "0/1"
    assert any("depth_" in p.name for p in out["figures"]) and any("first_steps" in p.name for p in out["figures"])
    assert depth_table(pd.DataFrame([{"device": "cpu", "task": "copy", "cell": "lstm", "backend": "b",
                                      "seq_lens": "10,25,50", "tried_seq_lens": [10, 25], "reached_seq_lens": [10],
                                      "boundary_seq_len": 10, "boundary_reached": 2, "boundary_runs": 3,
                                      "grad_decay_per_step": -0.1}])).iloc[0][["T=10", "T=25", "T=50"]].tolist() \
        == ["2/3", "0/1", ""]
