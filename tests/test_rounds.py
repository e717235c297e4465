"""Numbers that hold from one run to the next: rounds, enough samples, contention around the window."""
from __future__ import annotations

import pytest

from rnnbench import cli, contention, measure, store, suites, sweep
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


def test_cli_prints_one_warning_line_with_the_count(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RNNBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(contention, "Window", _Busy)
    argv = ["run", "--backends", "torch_eager", "--cells", "lstm", "--batch", "4", "--seq-len", "8", "--hidden",
            "16", "--input-size", "8", "--mode", "forward,train", "--rounds", "2", "--out", str(tmp_path), "--quiet",
            "--no-report", "--machine", "box"]
    assert cli.main(argv) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: 4 of 4 timing records are contended")
    (run_dir,) = (tmp_path / "box").iterdir()
    rounds = sorted((r["mode"], r["round"]) for r in store.read_records(run_dir / store.RECORDS)
                    if r["kind"] == "timing")
    assert rounds == [("forward", 0), ("forward", 1), ("train", 0), ("train", 1)]


@pytest.mark.parametrize("rounds", [0, -1])
def test_rounds_must_be_positive(rounds, capsys):
    assert cli.main(["run", "--rounds", str(rounds), "--no-report"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
