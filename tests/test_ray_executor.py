"""The ray executor on local Ray clusters bound to 127.0.0.1.

A sweep gives the records of the inline executor; a worker that dies, or a task
past its timeout, becomes a record and the others complete; a task lost with its
node leaves no record and ``--resume`` runs it; a driver in another process
reaches a cluster by its address.  One embedded cluster serves the module (Ray
takes 10-20 s to start); the node-loss test, which builds a cluster of several
nodes, comes first so that it never meets that one.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest

ray = pytest.importorskip("ray")

from rnnbench import cli, ray_executor, store  # noqa: E402
from rnnbench.jobs import TimingJob, record_key  # noqa: E402
from rnnbench.measure import base_record  # noqa: E402
from rnnbench.sweep import build_configs, execute_inline, run_sweep  # noqa: E402

FAST = dict(min_time_s=0.01, max_time_s=0.05, min_repeats=2)
SHAPE = dict(batch=2, seq_len=6, input_size=3, hidden=4)


class KillsItsWorker(TimingJob):
    """A configuration whose run kills the process it runs in, as a segfault or the OOM killer would."""

    def run(self, fresh_process):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class Sleeps(TimingJob):
    """A configuration that marks its start in a folder, sleeps, and gives one ok record."""

    seconds: float = 60.0
    started_dir: str = ""

    def run(self, fresh_process):
        if self.started_dir:
            (Path(self.started_dir) / str(self.seq_len)).touch()
        time.sleep(self.seconds)
        return [base_record(self)]


@pytest.mark.slow
def test_a_task_lost_with_its_node_is_left_for_resume(tmp_path, capsys):
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "this test needs its own cluster: keep it before the module's cluster starts"
    started = tmp_path / "started"
    started.mkdir()
    jobs = [Sleeps("torch_eager", seq_len=t, seconds=8, started_dir=str(started)) for t in (1, 2, 3)]
    store_bytes = ray_executor.EMBEDDED_OBJECT_STORE_BYTES
    with ray_executor.loopback_node():
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                              "object_store_memory": store_bytes})
        doomed = nodes.add_node(num_cpus=1, object_store_memory=store_bytes)
        nodes.add_node(num_cpus=1, object_store_memory=store_bytes)
    try:
        def remove_once_two_run():
            while len(list(started.iterdir())) < 2:
                time.sleep(0.1)
            nodes.remove_node(doomed)  # one of the two running tasks is on it

        remover = threading.Thread(target=remove_once_two_run, daemon=True)
        remover.start()
        run = store.Run.create(tmp_path / "runs", "m", {"jobs": [j.to_dict() for j in jobs]})
        run_sweep(run, jobs, "ray", nodes.address, progress=False)
        remover.join(timeout=60)
        first = {r["seq_len"] for r in run.records()}
        assert len(first) == 2 and all(r["status"] == "ok" for r in run.records())
        (lost,) = {1, 2, 3} - first
        assert (started / str(lost)).exists()  # it was running when its node went
        assert "1 configuration(s) lost with their node" in capsys.readouterr().err
        run_sweep(store.Run.resume(run.path), jobs, "ray", nodes.address, progress=False)
        assert sorted(r["seq_len"] for r in run.records()) == [1, 2, 3]
    finally:
        nodes.shutdown()


@pytest.fixture(scope="module")
def cluster():
    """The embedded cluster, as ``--executor ray`` with no address starts it; yields its address."""
    ray_executor.connect(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_the_embedded_cluster_listens_on_loopback_only_and_runs_at_normal_priority(cluster):
    assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == 0  # Ray's default would be nice 15
    assert cluster.startswith("127.0.0.1:")
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    listening = [c.laddr.ip for p in psutil.Process().children(recursive=True)
                 for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert listening and set(listening) <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening


def test_a_sweep_gives_the_records_of_the_inline_executor(cluster):
    jobs = build_configs("quick", {"backends": ["torch_eager", "torch_cudnn"], "cells": ["lstm"], "batch": [2],
                                   "seq_len": [6], "input_size": [3], "hidden": [4], "mode": ["train"]})
    jobs = [TimingJob.from_dict({**j.to_dict(), **FAST}) for j in jobs]

    def by_key(executor):
        return {(record_key(r), r["kind"]): r for _, records in executor for r in records}

    inline, on_ray = by_key(execute_inline(jobs)), by_key(ray_executor.execute(jobs))
    assert set(on_ray) == set(inline) and len(on_ray) == 2 * len(jobs)  # a timing and a stability record each
    for key, rec in on_ray.items():
        want = inline[key]
        assert rec["status"] == want["status"] == "ok"
        assert rec["impl_label"] == want["impl_label"]
        assert rec["threads"] == 2  # the task holds all the node's CPUs (Ray sets OMP_NUM_THREADS to them)
        if rec["kind"] == "timing":
            assert rec["max_rel_err"] == pytest.approx(want["max_rel_err"], rel=1e-3, abs=1e-7)
            assert rec["peak_method"] == "rss_rise_fresh_process" and rec["peak_bytes"] is not None
        else:
            np.testing.assert_allclose(rec["grad_profile"], want["grad_profile"], rtol=1e-4)


def test_faults_become_records_and_the_other_configurations_complete(cluster):
    killed = KillsItsWorker("torch_eager", "gru", **{**SHAPE, "seq_len": 1})
    hangs = Sleeps("torch_eager", "gru", **{**SHAPE, "seq_len": 2}, seconds=300, timeout_s=2)
    good = TimingJob("torch_eager", "gru", mode="forward", **{**SHAPE, "seq_len": 3}, **FAST)
    t0 = time.monotonic()
    out = {job.seq_len: records for job, records in ray_executor.execute([killed, hangs, good])}
    assert sorted(out) == [1, 2, 3] and all(len(records) == 1 for records in out.values())
    assert out[1][0]["status"] == "error" and "worker process died" in out[1][0]["message"]
    assert out[2][0]["status"] == "timeout" and "2 s" in out[2][0]["message"]
    assert out[3][0]["status"] == "ok" and out[3][0]["median_s"] > 0
    assert time.monotonic() - t0 < 200  # the hung task was cancelled, not waited for


def test_a_configuration_no_node_can_run_is_left_for_resume(cluster, capsys):
    assert list(ray_executor.execute([TimingJob("torch_eager", device="cuda", **SHAPE)])) == []
    assert "1 configuration(s) not run: no node of the cluster has the cuda" in capsys.readouterr().err


@pytest.mark.slow
def test_the_cli_points_a_sweep_at_an_existing_cluster(cluster, tmp_path):
    argv = ["run", "--executor", "ray", "--ray-address", cluster, "--backends", "torch_eager", "--cells", "gru",
            "--batch", "2", "--seq-len", "3,4", "--input-size", "3", "--hidden", "4", "--mode", "forward",
            "--out", str(tmp_path), "--machine", "m", "--no-report", "--quiet"]
    proc = subprocess.run([sys.executable, "-m", "rnnbench", *argv], capture_output=True, text=True, timeout=300,
                          cwd=store.REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = (tmp_path / "m").iterdir()
    records = store.Run(run_dir).records()
    assert sorted(r["seq_len"] for r in records) == [3, 4] and all(r["status"] == "ok" for r in records)


@pytest.mark.parametrize("ray_present, address, says", [
    (False, None, "pip install -e '.[ray]'"),
    (True, "127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1"),
])
def test_no_ray_or_no_cluster_is_one_line_exit_2_and_no_folder(ray_present, address, says, tmp_path, capsys,
                                                              monkeypatch):
    if not ray_present:
        monkeypatch.setitem(sys.modules, "ray", None)  # what find_spec sees when ray is not installed
    argv = ["run", "--executor", "ray", "--out", str(tmp_path)] + (["--ray-address", address] if address else [])
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err
    assert not any(tmp_path.iterdir())
