"""Faults: files we wrote read defensively, checked appends, one writer per run, no data loss,
workers that die with their parent, OOM kills recognised, the inline watchdog, retries."""
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from rnnbench import cli, recommend, report, store, sweep
from rnnbench.config import ConfigError
from rnnbench.jobs import TimingJob
from rnnbench.sweep import execute_inline, run_in_child, run_sweep

from .synthetic_results import make_run, timing_record

REPO = Path(__file__).resolve().parent.parent
FAST = dict(min_time_s=0.01, max_time_s=0.1, min_repeats=3)
TINY = dict(batch=2, seq_len=3, input_size=3, hidden=4)
COMMITTED = sorted((REPO / "results" / "cpu-2core").glob("*/run.json"))


def _small_run(root, **kw):
    """A finished synthetic run, its lock released (as at the end of a sweep)."""
    run = make_run(root, machine="box", backends=("torch_eager", "torch_cudnn"), extras=False,
                   shapes=dict(cells=("lstm",), modes=("forward",), batch=(4, 16), seq_len=(8, 64), hidden=(8,)),
                   **kw)
    run.release()
    return run


def _insert_line(path: Path, index: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(index, text)
    path.write_text("".join(lines))


# -- defensive reads -----------------------------------------------------------------------------


def test_a_garbage_line_is_skipped_with_one_warning_naming_file_and_line(tmp_path, capsys):
    run = _small_run(tmp_path)
    records = run.path / store.RECORDS
    n = len(records.read_text().splitlines())
    _insert_line(records, 2, "\x00\x00\x00garbage{\n")  # what a full disk can leave in the middle
    assert cli.main(["report", str(run.path), "--out", str(tmp_path / "rep")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and f"{records}:3" in err, err
    assert len(store.read_records(records)) == n
    capsys.readouterr()
    rec = recommend.recommend("lstm", 4, 8, "forward", "cpu", hidden=8, results=[str(tmp_path / "box")])
    assert rec.query["cell"] == "lstm"
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and f"{records}:3" in err, err


def test_resume_repairs_a_torn_tail_and_refuses_a_corrupt_middle(tmp_path):
    run = _small_run(tmp_path)
    records = run.path / store.RECORDS
    whole = records.read_bytes()
    records.write_bytes(whole + b'{"run_id": "torn')  # a crash in the middle of the last write
    store.Run.resume(run.path).release()
    assert records.read_bytes() == whole
    _insert_line(records, 3, '{"run_id": "not closed\n')
    with pytest.raises(ConfigError, match=rf"{records}:4"):
        store.Run.resume(run.path)
    assert b"not closed" in records.read_bytes()  # refused, not "repaired"


@pytest.mark.parametrize("content, says", [("{}", "run_id"), ("not json", "not JSON"), ("5", "not an object"),
                                           (None, "schema 99")])
def test_run_json_is_validated_and_another_schema_refused(tmp_path, content, says):
    run = _small_run(tmp_path)
    info_path = run.path / store.RUN_JSON
    if content is None:
        info = json.loads(info_path.read_text())
        assert info["schema"] == store.RUN_SCHEMA
        info_path.write_text(json.dumps({**info, "schema": 99}))
    else:
        info_path.write_text(content)
    for open_run in (store.Run, store.Run.resume, lambda p: store.load([p])):
        with pytest.raises(ConfigError, match=says):
            open_run(run.path)


def test_a_short_write_raises_and_truncates_back_to_the_last_whole_line(tmp_path, monkeypatch):
    run = _small_run(tmp_path)
    records = run.path / store.RECORDS
    before = records.read_bytes()
    real_write = os.write
    monkeypatch.setattr(store.os, "write", lambda fd, data: real_write(fd, data[:len(data) // 2]))
    with pytest.raises(store.StoreError, match="short write"):
        run.append(store.read_records(records)[0])
    monkeypatch.undo()
    assert records.read_bytes() == before


@pytest.mark.slow  # three CLI runs in fresh processes: about 5 minutes on the loaded 2-core VM
def test_a_file_size_limit_mid_run_keeps_whole_lines_and_resume_completes(tmp_path):
    """A disk that fills mid-run (RLIMIT_FSIZE in the child): one clear line, whole records, resumable."""
    grid = ["--backends", "torch_eager", "--cells", "lstm,gru", "--batch", "2", "--seq-len", "3,4,5", "--hidden",
            "4", "--input-size", "3", "--mode", "forward", "--quiet", "--no-report", "--machine", "box"]
    scratch = subprocess.run([sys.executable, "-m", "rnnbench", "run", *grid, "--out", str(tmp_path / "scratch")],
                             capture_output=True, text=True, timeout=600, cwd=REPO)
    assert scratch.returncode == 0, scratch.stderr
    (scratch_run,) = (tmp_path / "scratch" / "box").iterdir()
    # run.json fits under the limit, the records (over twice its size here) do not
    limit = (scratch_run / store.RUN_JSON).stat().st_size + 1500
    assert (scratch_run / store.RECORDS).stat().st_size > limit + 1000

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "rnnbench", "run", *grid, "--out", str(out)], capture_output=True,
                          text=True, timeout=600, cwd=REPO, preexec_fn=cap)
    (run_dir,) = (out / "box").iterdir()
    records = run_dir / store.RECORDS
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and str(records) in last and "--resume" in last, last
    data = records.read_bytes()
    assert data.endswith(b"\n") and 0 < len(store.read_records(records)) < 6
    resumed = subprocess.run([sys.executable, "-m", "rnnbench", "run", "--resume", str(run_dir), "--quiet",
                              "--no-report"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr
    keys = [(r["cell"], r["seq_len"]) for r in store.read_records(records)]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 6


# -- one writer per run --------------------------------------------------------------------------


def test_a_second_writer_is_refused_with_the_pid_of_the_first(tmp_path, capsys):
    run = _small_run(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from rnnbench import store
        run = store.Run.resume({str(run.path)!r})
        print("locked", flush=True)
        time.sleep(120)
        """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (run.path / store.RECORDS).read_bytes()
        assert cli.main(["run", "--resume", str(run.path), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"run in use by pid {holder.pid}" in err, err
        assert (run.path / store.RECORDS).read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    store.Run.resume(run.path).release()  # the lock died with its holder


def test_report_says_when_a_run_holds_duplicate_measurements(tmp_path):
    import numpy as np

    run = _small_run(tmp_path)
    rec = timing_record("torch_eager", "lstm", "forward", 4, 8, 8, 0.01, np.random.default_rng(0))
    run.append(rec)  # the same configuration measured twice (two writers, before the lock)
    report.write_report([run.path], tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    section = md.split("## Duplicate measurements", 1)[1].split("##", 1)[0]
    assert "1 configuration(s) hold more than one" in section and "torch_eager" in section


# -- no data loss --------------------------------------------------------------------------------


def test_report_out_removes_only_files_of_its_own_manifest(tmp_path):
    big = _small_run(tmp_path / "a")
    out = tmp_path / "rep"
    report.write_report([big.path], out)
    first = json.loads((out / report.MANIFEST).read_text())["files"]
    assert "report.html" in first and any(f.startswith("figures/") for f in first)
    mine = out / "figures" / "my_notes.png"
    mine.write_bytes(b"the user's own figure")
    (out / "notes.txt").write_text("keep me")
    lonely = store.Run.create(tmp_path / "b", "box", {})  # a run with no figures: every old figure goes
    report.write_report([lonely.path], out)
    second = json.loads((out / report.MANIFEST).read_text())["files"]
    assert mine.read_bytes() == b"the user's own figure" and (out / "notes.txt").read_text() == "keep me"
    for f in set(first) - set(second):
        assert not (out / f).exists()
    assert all((out / f).exists() for f in second)


def test_report_refuses_a_folder_it_did_not_write(tmp_path):
    run = _small_run(tmp_path)
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "report.md").write_text("someone else's report")
    with pytest.raises(ConfigError, match="did not write"):
        report.write_report([run.path], out)
    assert (out / "report.md").read_text() == "someone else's report" and len(list(out.iterdir())) == 1


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not COMMITTED, reason="no committed result set under results/cpu-2core")
def test_a_resume_with_nothing_to_do_changes_no_file(tmp_path, capsys):
    copy = tmp_path / COMMITTED[0].parent.name
    shutil.copytree(COMMITTED[0].parent, copy)
    before = _tree(copy)
    assert cli.main(["run", "--resume", str(copy), "--quiet"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert _tree(copy) == before


# -- faults: the worker's parent dies, the kernel kills for memory, a hang inline -------------------


def _pids_with(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_worker_dies_with_its_parent(tmp_path, how):
    seed = 100_000 + uuid.uuid4().int % 800_000  # marks this worker's command line
    job = TimingJob("torch_eager", "lstm", seed=seed, min_time_s=120, max_time_s=120, timeout_s=300, **TINY)
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from rnnbench.jobs import job_from_dict
        from rnnbench.sweep import run_in_child
        run_in_child(job_from_dict({job.to_dict()!r}))
        """)], cwd=REPO)
    marker = f'"seed": {seed}'
    try:
        deadline = time.monotonic() + 60
        while not (workers := [p for p in _pids_with(marker) if p != parent.pid]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert workers, "the worker never started"
        time.sleep(1.0)
        os.kill(parent.pid, how)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers), "the worker outlived its parent"
    finally:
        for p in _pids_with(marker):
            if p != os.getpid():
                os.kill(p, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()


def _memory_cgroup():
    """(a new child cgroup's folder, the name of its limit file) where this machine lets us make one."""
    from impls.runtime import memory_cgroup

    own = memory_cgroup()
    if own is None:
        return None, "no memory cgroup for this process"
    folder, version = own
    child = folder / f"rnnbench-oom-{uuid.uuid4().hex[:8]}"
    try:
        child.mkdir()
    except OSError as exc:
        return None, f"no writable cgroup ({exc})"
    limit = "memory.max" if version == 2 else "memory.limit_in_bytes"
    if not (child / limit).exists():
        child.rmdir()
        return None, f"the cgroup {child} has no {limit} (memory controller not enabled)"
    return child, limit


def test_an_oom_kill_is_recorded_as_oom(tmp_path):
    """The worker runs in a child cgroup whose memory limit (160 MiB) is below what importing the
    frameworks takes, so the kernel's OOM killer kills it (no Python error, nothing on stderr): an oom
    record from SIGKILL and the cgroup's risen oom_kill count, not an error."""
    cgroup, limit = _memory_cgroup()
    if cgroup is None:
        pytest.skip(limit)
    try:
        job = TimingJob("torch_eager", "lstm", mode="forward", timeout_s=240, **FAST, **TINY)

        def join():
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

        # The window between "the worker finishes" and "the parent dies too" is narrow and moves with
        # what the machine has cached, so the limit steps down until the kernel kills the worker; every
        # attempt must end as ok (not killed) or oom, never as an error.
        seen = []
        for mib in (192, 160, 136, 120):
            (cgroup / limit).write_text(str(mib * 1024**2))
            proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
                import json
                from rnnbench.jobs import job_from_dict
                from rnnbench.sweep import run_in_child
                print(json.dumps(run_in_child(job_from_dict({job.to_dict()!r}))))
                """)], cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=join)
            if proc.returncode != 0:  # the parent itself was killed: this limit is too low for it
                seen.append((mib, f"parent rc {proc.returncode}"))
                continue
            recs = json.loads(proc.stdout.strip().splitlines()[-1])
            statuses = {r["status"] for r in recs}
            seen.append((mib, sorted(statuses)))
            assert statuses <= {"ok", "oom"}, (mib, recs)
            if "oom" in statuses:
                rec = next(r for r in recs if r["status"] == "oom")
                assert "oom_kill" in rec["message"], rec["message"]
                break
        else:
            pytest.fail(f"no limit gave an oom kill of the worker alone: {seen}")
    finally:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                cgroup.rmdir()
                break
            except OSError:
                time.sleep(0.2)


def test_the_inline_executor_records_a_hang_as_timeout_and_goes_on():
    hung = TimingJob("torch_eager", "lstm", min_time_s=8, max_time_s=8, min_repeats=10**9, timeout_s=1, **TINY)
    good = TimingJob("torch_eager", "gru", mode="forward", **FAST, **TINY)
    start = time.monotonic()
    out = list(execute_inline([hung, good]))
    assert time.monotonic() - start < 60
    (timeout,) = out[0][1]
    assert out[0][0] is hung and timeout["status"] == "timeout" and "1 s" in timeout["message"]
    assert out[1][0] is good and out[1][1][0]["status"] == "ok"


def test_resume_retry_failed_reruns_failed_configurations(tmp_path, capsys):
    jobs = [TimingJob("torch_eager", cell, mode="forward", **FAST, **TINY) for cell in ("lstm", "gru", "rnn_tanh")]
    run = store.Run.create(tmp_path, "box", {"jobs": [j.to_dict() for j in jobs], "executor": "inline"})
    run.append(jobs[0].failure("error", "RuntimeError: flaky"))
    run.append(jobs[1].failure("timeout", "no result after 1 s"))
    run_sweep(run, jobs[2:], progress=False)
    run.release()
    assert cli.main(["run", "--resume", str(run.path), "--quiet", "--no-report"]) == 0
    assert len(store.read_records(run.path / store.RECORDS)) == 3  # failures count as done
    assert cli.main(["run", "--resume", str(run.path), "--retry-failed", "--quiet", "--no-report"]) == 0
    recs = store.read_records(run.path / store.RECORDS)
    assert [r["status"] for r in recs if r["cell"] == "lstm"] == ["error", "ok"]
    assert [r["status"] for r in recs if r["cell"] == "gru"] == ["timeout", "ok"]
    assert [r["status"] for r in recs if r["cell"] == "rnn_tanh"] == ["ok"]


def test_the_interrupt_message_names_the_run_folder(tmp_path, monkeypatch, capsys):
    def interrupted(run, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_sweep", interrupted)
    code = cli.main(["run", "--backends", "torch_eager", "--cells", "gru", "--mode", "forward", "--batch", "2",
                     "--seq-len", "3", "--hidden", "4", "--input-size", "3", "--out", str(tmp_path), "--quiet",
                     "--machine", "box"])
    (run_dir,) = (tmp_path / "box").iterdir()
    err = capsys.readouterr().err
    assert code == 130 and f"rnnbench run --resume {run_dir}" in err and "RUN_DIR" not in err
