"""--metric instructions: the difference of two windows, the records it writes, the set-up checked
before any work, and real counts under valgrind's callgrind (a pure-Python workload here; torch's
configurations through the CLI in the slow test)."""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rnnbench import callgrind, cli, store
from rnnbench.jobs import InstructionJob, TimingJob, job_from_dict, record_key
from rnnbench.sweep import plan

REPO = Path(__file__).resolve().parent.parent
needs_valgrind = pytest.mark.skipif(callgrind.setup_problem() is not None,
                                    reason=f"{callgrind.setup_problem()} (.ci/run installs it)")


# -- the difference ---------------------------------------------------------------------------

def test_per_call_cancels_what_every_window_shares():
    fixed, one_call = 1_234_567, 92_830_000
    windows = {n: fixed + n * one_call for n in (1, 3)}
    assert callgrind.per_call(windows) == one_call
    assert callgrind.per_call({**windows, 2: fixed + 2 * one_call}) == one_call  # the outer two windows


def test_per_call_needs_two_windows():
    with pytest.raises(ValueError, match="two windows"):
        callgrind.per_call({3: 10})


def test_read_totals_reads_the_dump_totals(tmp_path):
    dump = tmp_path / "callgrind.out.1.1"
    dump.write_text("version: 1\ncreator: callgrind-3.19.0\ndesc: Trigger: Client Request: w\nevents: Ir\n"
                    "fn=(1) main\n3 100\nsummary: 0\ntotals: 185668946\n")
    assert callgrind.read_totals(dump) == 185668946
    (tmp_path / "other").write_text("events: Ir\n")
    with pytest.raises(ValueError, match="no totals"):
        callgrind.read_totals(tmp_path / "other")


# -- the records ------------------------------------------------------------------------------

def _record(**changes):
    job = InstructionJob("torch_eager", "lstm", batch=4, seq_len=8, input_size=8, hidden=8, mode="forward")
    rec = {"run_id": "r", "kind": "instructions", **job.record_fields, "mode": "forward", "status": "ok",
           "message": "", "backend_kind": "rnn", "framework": "torch", "impl_label": "eager", "threads": 1,
           "matmul_precision": "highest", "metric": "instructions", "instructions": 1.5e6,
           "instruction_windows": [[1, 1_600_000], [3, 4_600_000]]}
    return job, {**rec, **changes}


def test_an_instructions_record_is_checked_by_kind():
    job, rec = _record()
    store.check_record(rec)
    assert record_key(rec) == job.key()  # resume finds it
    for missing in ("instructions", "metric", "instruction_windows"):
        with pytest.raises(store.RecordError, match=f"missing {missing}"):
            store.check_record({k: v for k, v in rec.items() if k != missing})
    with pytest.raises(store.RecordError, match="instructions="):
        store.check_record({**rec, "instructions": "many"})
    # a training record's metric is the task's figure, a number: the type is the kind's
    with pytest.raises(store.RecordError, match="metric="):
        store.check_record({**rec, "metric": 0.5})


def test_instruction_jobs_round_trip_and_stay_on_the_cpu():
    job = InstructionJob("torch_cudnn", "gru", mode="train")
    assert job_from_dict(job.to_dict()) == job and job.key()[0] == "instructions"
    assert job.key() != TimingJob("torch_cudnn", "gru", mode="train").key()
    with pytest.raises(Exception, match="valid device: cpu"):
        InstructionJob("torch_eager", device="cuda").validate()


@needs_valgrind
def test_plan_counts_the_suites_configurations():
    jobs, _ = plan(None, {"backends": ["torch_eager"], "mode": ["forward", "train"], "seq_len": [8]},
                   metric="instructions")
    assert jobs and all(type(j) is InstructionJob for j in jobs)
    assert {j.mode for j in jobs} == {"forward", "train"}


# -- set-up checked before any work: one line, exit 2, nothing written ---------------------------

def _main(argv, tmp_path, capsys):
    out = tmp_path / "out"
    status = cli.main([*argv, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    return status, err, out


def test_no_valgrind_is_one_line_naming_the_package(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(callgrind.shutil, "which", lambda name: None if name == "valgrind" else shutil.which(name))
    status, err, out = _main(["run", "--metric", "instructions", "--backends", "torch_eager"], tmp_path, capsys)
    assert status == 2 and len(err.splitlines()) == 1 and "apt-get install valgrind" in err, err
    assert not out.exists()


@pytest.mark.parametrize("argv, expected", [
    (["--executor", "process"], "takes no --executor"),
    (["--isolate"], "takes no --executor"),
    (["--metric", "cycles"], "invalid choice"),
    (["--suite", "tasks"], "trains"),
])
def test_metric_instructions_bad_input(tmp_path, capsys, argv, expected):
    metric = [] if "--metric" in argv else ["--metric", "instructions"]
    status, err, out = _main(["run", *metric, *argv], tmp_path, capsys)
    assert status == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert not out.exists()


def test_a_counting_run_resumes_only_under_valgrind(tmp_path, capsys):
    job = InstructionJob("torch_eager", "lstm", batch=4, seq_len=8, input_size=8, hidden=8, mode="forward")
    run = store.Run.create(tmp_path, "m", {"executor": "callgrind", "jobs": [job.to_dict()]})
    run.release()
    before = sorted(p.name for p in run.path.iterdir())
    assert cli.main(["run", "--resume", str(run.path), "--executor", "process"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "takes no --executor" in err, err
    assert sorted(p.name for p in run.path.iterdir()) == before and run.records() == []


# -- real counts under callgrind ----------------------------------------------------------------

COUNTING_SCRIPT = textwrap.dedent("""
    import json, sys
    from rnnbench import callgrind

    def work(n):
        return lambda: sum(i * i for i in range(n))

    collector = callgrind.Collector(sys.argv[1])
    counts = {n: [collector.count(work(n))[0] for _ in range(2)] for n in (2000, 4000)}
    print("COUNTS " + json.dumps(counts))
""")


@needs_valgrind
def test_callgrind_counts_are_repeatable_and_proportional(tmp_path):
    """Under valgrind: a window pair counted twice agrees within 0.1%, and twice the work per call
    counts twice the instructions per call (the windows' fixed part cancelled by the difference)."""
    out_dir = tmp_path / "dumps"
    out_dir.mkdir()
    cmd = callgrind.command(out_dir, [sys.executable, "-c", COUNTING_SCRIPT, str(tmp_path / "helper")])
    env = callgrind.environment(out_dir)
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("COUNTS "))[len("COUNTS "):])
    small, large = counts["2000"], counts["4000"]
    assert abs(small[1] / small[0] - 1) < 1e-3 and abs(large[1] / large[0] - 1) < 1e-3, counts
    assert 1.9 < large[0] / small[0] < 2.1, counts
    assert not list(out_dir.glob("callgrind.out.*.*")), "each window's dump is removed once read"


def test_outside_valgrind_the_collector_refuses(tmp_path):
    if callgrind.setup_problem():
        pytest.skip(callgrind.setup_problem())
    with pytest.raises(RuntimeError, match="not running under valgrind"):
        callgrind.Collector(tmp_path)


@pytest.mark.slow
@needs_valgrind
def test_cli_counts_torch_configurations(tmp_path):
    """rnnbench run --metric instructions: one process under valgrind for both configurations, an
    ok record each with a positive count, and the train step costs more than the forward."""
    out = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "rnnbench", "run", "--metric", "instructions", "--backends",
                           "torch_cudnn", "--cells", "gru", "--batch", "4", "--seq-len", "8", "--hidden", "16",
                           "--mode", "forward,train", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=900, cwd=REPO,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = store.find_runs([out])
    records = {r["mode"]: r for r in store.read_records(run_dir / store.RECORDS)}
    assert set(records) == {"forward", "train"}
    assert all(r["status"] == "ok" and r["metric"] == "instructions" for r in records.values()), records
    assert 0 < records["forward"]["instructions"] < records["train"]["instructions"]
    assert json.loads((run_dir / store.RUN_JSON).read_text())["executor"] == "callgrind"
