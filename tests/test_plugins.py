"""Backends from outside the package (docs/design.md): impls.register, entry points, --plugin and
$RNNBENCH_PLUGINS, and that every process the suite starts sees the same backends."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import impls
from rnnbench.config import ConfigError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "plugin" / "jit_lstm.py"
TINY = dict(cell="lstm", batch=2, seq_len=4, input_size=3, hidden=4, min_time_s=0.0, max_time_s=0.05, min_repeats=2)


@pytest.fixture
def fresh_registry(monkeypatch):
    """This test's registrations, plugins and exports are undone after it."""
    monkeypatch.setattr(impls, "_REGISTRY", dict(impls._REGISTRY))
    monkeypatch.setattr(impls, "_CACHE", dict(impls._CACHE))
    monkeypatch.setattr(impls, "_PLUGINS", dict(impls._PLUGINS))
    monkeypatch.setenv(impls.PLUGINS_ENV, "")
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(sys, "path", list(sys.path))
    for module in [m for m in sys.modules if m == "jit_lstm"]:
        monkeypatch.delitem(sys.modules, module)
    return monkeypatch


def test_register_adds_a_backend_of_its_kind_and_never_replaces_ours(fresh_registry):
    class Mine:
        name, framework = "mine", "numpy"

    impls.register("mine", Mine)
    assert "mine" in impls.names("rnn") and "mine" not in impls.names("baseline")
    assert impls.get("mine").kind == "rnn" and impls.module_of("mine") == __name__
    with pytest.raises(ValueError, match="already registered"):
        impls.register("torch_eager", Mine)
    with pytest.raises(ValueError, match="kind must be one of rnn, baseline"):
        impls.register("other", Mine, kind="transformer")
    # a module other than ours that registers is exported to every child process
    assert impls.plugins_from_env() == [__name__]


def test_an_installed_entry_point_is_found_by_names(fresh_registry, tmp_path):
    """A package's ``[project.entry-points."rnnbench.backends"]``, as pip writes it into dist-info."""
    (tmp_path / "jit_lstm.py").write_text(EXAMPLE.read_text())
    info = tmp_path / "rnnbench_jit_lstm-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rnnbench-jit-lstm\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[rnnbench.backends]\njit_lstm = jit_lstm:JitLSTM\n")
    fresh_registry.syspath_prepend(str(tmp_path))
    fresh_registry.setattr(impls, "_DISCOVERED", False)
    assert "jit_lstm" in impls.names("rnn")
    assert "jit_lstm" not in sys.modules  # found lazily: imported on first use
    assert impls.get("jit_lstm").framework == "torch"
    assert {"module": "jit_lstm", "version": "0.1.0", "source": "entry_point",
            "distribution": "rnnbench-jit-lstm"} in impls.plugins()


def test_a_plugin_file_reaches_a_child_process(fresh_registry, tmp_path):
    from rnnbench.jobs import TimingJob
    from rnnbench.sweep import run_in_child

    info = impls.load_plugin(str(EXAMPLE))
    assert info["module"] == "jit_lstm" and info["path"] == str(EXAMPLE)
    assert impls.plugins_from_env() == [str(EXAMPLE)]  # what the child loads
    (record,) = run_in_child(TimingJob("jit_lstm", mode="forward", **TINY))
    assert record["status"] == "ok", record["message"]
    assert record["impl_label"] == "torchscript" and record["max_rel_err"] < 1e-5


def _run_folder(tmp_path, plugins):
    from rnnbench.jobs import TimingJob
    from rnnbench.store import Run

    run = Run.create(tmp_path, "m", {"executor": "inline", "plugins": plugins,
                                     "jobs": [TimingJob("jit_lstm", mode="forward", **TINY).to_dict()]})
    run.release()
    return run.path


def test_resume_loads_the_runs_plugins_or_refuses_in_one_line(fresh_registry, tmp_path):
    from rnnbench.sweep import resume_run

    recorded = [{"module": "jit_lstm", "version": None, "source": "plugin", "path": str(EXAMPLE)}]
    run, jobs, _ = resume_run(_run_folder(tmp_path / "a", recorded))
    run.release()
    assert [j.backend for j in jobs] == ["jit_lstm"] and "jit_lstm" in impls.names()

    fresh_registry.delitem(sys.modules, "jit_lstm")
    fresh_registry.setattr(impls, "_REGISTRY", {k: v for k, v in impls._REGISTRY.items() if k != "jit_lstm"})
    fresh_registry.setattr(impls, "_PLUGINS", {})
    fresh_registry.setattr(sys, "path", [p for p in sys.path if p != str(EXAMPLE.parent)])
    missing = [{**recorded[0], "path": str(tmp_path / "gone" / "jit_lstm.py")}]
    with pytest.raises(ConfigError) as refused:
        resume_run(_run_folder(tmp_path / "b", missing))
    message = str(refused.value)
    assert "\n" not in message and "run.json: the run used plugin jit_lstm" in message and "--plugin" in message


def test_a_script_without_a_main_guard_never_runs_again_in_a_memory_probe(tmp_path):
    """multiprocessing's spawn and forkserver import the script again in every child; our probes do not."""
    marker = tmp_path / "imports.txt"
    script = tmp_path / "bench.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(EXAMPLE.parent)!r})
open({str(marker)!r}, "a").write("imported\\n")
import jit_lstm
from rnnbench.jobs import TimingJob
from rnnbench.measure import probe_memory_in_child
print("PEAK", *probe_memory_in_child(TimingJob("jit_lstm", mode="forward", **{TINY!r})))
""")
    env = {**os.environ, "PYTHONPATH": str(REPO), impls.PLUGINS_ENV: ""}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert marker.read_text() == "imported\n"
    peak, method = done.stdout.split("PEAK ")[1].split()
    assert int(peak) > 0 and method == "rss_rise_fresh_process"


def test_a_backend_registered_in_main_is_refused_by_the_process_executor(fresh_registry):
    from rnnbench.jobs import TimingJob
    from rnnbench.sweep import check_portable

    def factory():
        raise AssertionError("never built")

    factory.__module__ = "__main__"
    impls.register("in_script", factory)
    job = TimingJob("in_script", **TINY)
    check_portable([job], "inline")
    with pytest.raises(ConfigError, match="--executor process: backend 'in_script' is registered by the script"):
        check_portable([job], "process")


def test_ray_workers_get_a_plain_file_plugin_as_a_module_and_by_name(fresh_registry):
    pytest.importorskip("ray")
    from rnnbench.ray_executor import runtime_env

    impls.load_plugin(str(EXAMPLE))
    env = runtime_env()
    shipped = Path(env["py_modules"][-1])
    assert shipped.name == "jit_lstm" and (shipped / "__init__.py").read_text() == EXAMPLE.read_text()
    assert env["env_vars"] == {impls.PLUGINS_ENV: "jit_lstm"}


def test_cli_plugin_that_cannot_be_imported_is_one_line_and_exit_2(capsys):
    from rnnbench.cli import main

    assert main(["list", "--plugin", "no_such_plugin_module"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plugin 'no_such_plugin_module' cannot be imported" in err
