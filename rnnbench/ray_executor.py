"""The ``ray`` executor: each configuration a Ray task in a fresh worker process.

A task runs in a worker of its own (``max_calls=1``: the isolation of
``--executor process``) and asks for what a clean measurement needs: one GPU for
a CUDA configuration, so a sweep spreads over every GPU of a cluster, and all of
a node's CPUs for a CPU one, so timings never share cores.  Records come back to
the driver, which appends them to the run's one store as each task ends.

Faults become records, as with the process executor: a worker that dies is
``error``, one that Ray's memory monitor kills is ``oom``, and a task still
running ``timeout_s`` after it started (queueing does not count) is cancelled and
recorded as ``timeout``.  A task lost with its node leaves no record (the
configuration did not fail, its machine did), nor does one that no node of the
cluster can run; the sweep finishes the rest and ``rnnbench run --resume
RUN_DIR`` runs them.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray import exceptions as ray_errors

from .config import ConfigError
from .store import REPO_ROOT

STARTED = "started"
# Records are a few kB each: the embedded cluster needs no object store of the default size (30% of RAM).
EMBEDDED_OBJECT_STORE_BYTES = 100 * 1024**2
EMBEDDED_SYSTEM_CONFIG = {
    "worker_niceness": 0,  # Ray's default (nice 15) lets anything else on the machine take a timing's CPU
    "task_oom_retries": 0,  # a configuration that runs out of memory is an oom record, not retried
}


@ray.remote(max_calls=1, max_retries=0)
def run_in_worker(job):
    """Yield STARTED as the task begins (its timeout counts from here), then the job's records."""
    from impls.runtime import prepare_process

    yield STARTED
    prepare_process()
    yield job.run(fresh_process=True)


@contextlib.contextmanager
def loopback_node():
    """Keep a node started here on 127.0.0.1.

    Ray replaces a 127.0.0.1 node address by the machine's network address (so
    that other nodes could join) unless multi-node clusters are switched off, as
    they are on macOS and Windows; the embedded cluster is one node.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _on_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(address: str | None = None, **local_options) -> None:
    """Join the cluster at ``address``, or start a one-node cluster here bound to 127.0.0.1.

    The driver ships its own ``rnnbench`` and ``impls`` to the workers, so the
    nodes of an existing cluster need only the dependencies.  ``local_options``
    go to ``ray.init`` when a cluster is started here (``num_cpus`` in tests).
    """
    common = dict(runtime_env=runtime_env(), log_to_driver=False, logging_level=logging.WARNING)
    # a cluster at 127.0.0.1 is reached, as one started here is, on the loopback
    on_loopback = not address or _on_loopback(address)
    with loopback_node() if on_loopback else contextlib.nullcontext():
        if not address:
            # address="local": a new cluster even when one started by `ray start` runs here
            ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                     object_store_memory=EMBEDDED_OBJECT_STORE_BYTES, _system_config=EMBEDDED_SYSTEM_CONFIG,
                     **common, **local_options)
            return
        check_listening(address)
        try:
            ray.init(address=address, **common)
        except ConnectionError as exc:
            raise ConfigError(f"cannot connect to the Ray cluster at {address} ({exc}); a cluster with token "
                              "authentication needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or "
                              "~/.ray/auth_token)") from None


def runtime_env() -> dict:
    """What every worker gets: our packages, each plain-file or uninstalled plugin module (a package's
    folder, or a one-file module as a package of its own), and $RNNBENCH_PLUGINS, so that a worker on
    any node registers the driver's backends.  A plugin from an installed package (entry point) must be
    installed on every node: a worker without it fails its jobs with a line that says so."""
    import impls

    modules = [str(REPO_ROOT / "rnnbench"), str(REPO_ROOT / "impls")]
    names = []
    for plugin in impls.plugins():
        if plugin["source"] != "plugin":
            continue
        names.append(plugin["module"])
        path = Path(plugin.get("path") or "")
        if "." in plugin["module"] or not path.is_file():
            continue  # a submodule comes with its top-level package, which must be importable on the nodes
        modules.append(str(path.parent) if path.name == "__init__.py" else _as_package(path))
    env = {"py_modules": modules}
    if names:
        env["env_vars"] = {impls.PLUGINS_ENV: ",".join(names)}
    return env


def _as_package(path: Path) -> str:
    """A one-file module ``m.py`` as a folder ``m/__init__.py`` (Ray ships folders, not single files)."""
    folder = Path(tempfile.mkdtemp(prefix="rnnbench-plugin-")) / path.stem
    folder.mkdir()
    shutil.copyfile(path, folder / "__init__.py")
    return str(folder)


ADDRESS_FORMS = "HOST:PORT (port 1-65535), ray://HOST:PORT or auto"
# An HTTP/2 client's opening (the preface and an empty SETTINGS frame): Ray's GCS and client server are
# gRPC servers, which answer with a SETTINGS frame of their own; anything else does not.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of HOST:PORT or ray://HOST:PORT; None for auto; ConfigError for anything else."""
    if address == "auto":
        return None
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = rest.rpartition(":")
    if "://" in rest or "/" in rest or not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"--ray-address must be {ADDRESS_FORMS}, got {address!r}")
    return host.strip("[]"), int(port)


def check_listening(address: str, timeout_s: float = 3.0) -> None:
    """Fail within seconds where nothing listens at the address, or what listens is not Ray (gRPC).

    Ray itself would retry for many minutes, or hang on a port that accepts and never answers.
    """
    where = split_address(address)
    if where is None:
        return  # auto: Ray finds the address
    try:
        conn = socket.create_connection(where, timeout=timeout_s)
    except OSError as exc:
        raise ConfigError(f"no Ray cluster answers at {address} ({exc}); start one with "
                          "`ray start --head`, or leave out --ray-address to run on this machine") from None
    try:
        conn.settimeout(timeout_s)
        conn.sendall(HTTP2_PREFACE)
        reply = conn.recv(9)
    except OSError:
        reply = b""
    finally:
        conn.close()
    if len(reply) < 4 or reply[3] != 0x04:  # the 4th byte of a frame header is its type; 4 is SETTINGS
        raise ConfigError(f"{address} accepts connections but is not a Ray cluster (no gRPC answer within "
                          f"{timeout_s:.0f} s); give the head node's GCS address (ray status prints it)")


def _failure_status(exc: ray_errors.RayError) -> tuple[str, str]:
    if isinstance(exc, ray_errors.OutOfMemoryError):
        return "oom", f"killed by Ray's memory monitor: {exc}"
    if isinstance(exc, ray_errors.WorkerCrashedError):
        return "error", "the worker process died while running this configuration (a crash or a kill)"
    return "error", f"{type(exc).__name__}: {exc}"


def execute(jobs, address: str | None = None):
    """Yield ``(job, records)`` as each job's task finishes, on the cluster at ``address``.

    With no address (and no Ray connection in this process yet), a cluster is
    started here and shut down at the end; a connection that already exists is
    used as it is.
    """
    jobs = list(jobs)
    if not jobs:
        return
    owns_connection = not ray.is_initialized()
    if owns_connection:
        connect(address)
    try:
        yield from _gather(jobs)
    finally:
        if owns_connection:
            ray.shutdown()


def _resources(job, node_cpus: float, has_gpu: bool) -> dict | None:
    """What the job's task asks for; None when no node of the cluster has it."""
    if job.device.startswith("cuda"):
        return {"num_gpus": 1} if has_gpu else None
    return {"num_cpus": node_cpus} if node_cpus else None


def _gather(jobs):
    # A CPU task takes a whole node; on nodes of several sizes, one of the largest.
    node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    running, deadlines, not_run, lost = {}, {}, [], []  # running: ObjectRefGenerator -> job
    for job in jobs:
        resources = _resources(job, node_cpus, has_gpu)
        if resources is None:
            not_run.append(job)
        else:
            running[run_in_worker.options(**resources).remote(job)] = job
    while running:
        wait_s = max(0.0, min(deadlines.values()) - time.monotonic()) if deadlines else None
        ready, _ = ray.wait(list(running), num_returns=1, timeout=wait_s)
        for task in ready:
            job = running[task]
            try:
                value = ray.get(next(task))
            except ray_errors.NodeDiedError:
                value = None
            except ray_errors.RayError as exc:
                value = [job.failure(*_failure_status(exc))]
            if value == STARTED:
                deadlines[task] = time.monotonic() + job.timeout_s
                continue
            del running[task]
            deadlines.pop(task, None)
            if value is None:
                lost.append(job)
            else:
                yield job, value
        for task, deadline in list(deadlines.items()):
            if time.monotonic() >= deadline:
                ray.cancel(task, force=True)
                job = running.pop(task)
                del deadlines[task]
                yield job, [job.failure("timeout", f"no result after {job.timeout_s:.0f} s; the Ray task was cancelled")]
    if lost:
        print(f"ray: {len(lost)} configuration(s) lost with their node, not recorded; "
              "rnnbench run --resume RUN_DIR runs them", file=sys.stderr)
    if not_run:
        devices = ", ".join(sorted({job.device for job in not_run}))
        print(f"ray: {len(not_run)} configuration(s) not run: no node of the cluster has the {devices} they need; "
              "rnnbench run --resume RUN_DIR on a cluster that has runs them", file=sys.stderr)
