"""How much of the machine others used while we timed (docs/design.md "Measurement hygiene fields").

A timed window is trusted only if nobody else ran on our cores meanwhile.  Others'
CPU time is the machine's busy time (``/proc/stat``: user, nice, system, irq,
softirq and steal -- steal is how other virtual machines on the host show up)
minus this process tree's own (``/proc/<pid>/stat`` of this process and every live
descendant, with the reaped children's times each parent carries), and, where the
process runs in a cgroup of its own, the cgroup's usage (``cpu.stat`` /
``cpuacct.usage``) minus ours; the larger of the two.  ``cores`` is that time over
the window's wall time: 1.0 means one core's worth of someone else's work.
Linux only; elsewhere every reading is 0 (``available`` says why).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def available() -> tuple[bool, str]:
    if not (PROC / "stat").exists():
        return False, "no /proc/stat (not Linux): contention is not measured"
    return True, ""


def machine_busy_s() -> float:
    """CPU seconds all cores have been busy since boot, steal included (0 without /proc)."""
    try:
        fields = (PROC / "stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    # cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _HZ


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:  # gone meanwhile
        return None
    return text[text.rfind(")") + 2:].split()


def descendants(root: int) -> list[int]:
    """Live processes below ``root`` (one scan of /proc: parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            f = _stat_fields(int(entry.name))
            if f is not None:
                children.setdefault(int(f[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_s(root: int | None = None) -> float:
    """CPU seconds of ``root`` (this process) and its descendants, live and reaped."""
    root = os.getpid() if root is None else root
    total = 0
    for pid in [root, *descendants(root)]:
        f = _stat_fields(pid)
        if f is not None:  # utime stime cutime cstime (fields 14-17 of stat)
            total += sum(int(v) for v in f[11:15])
    return total / _HZ


def _cgroup_usage_file() -> Path | None:
    """This process's cgroup CPU usage counter, unless it is the root cgroup (the whole machine)."""
    try:
        lines = (PROC / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if path in ("", "/"):
            continue
        if controllers == "":  # cgroup v2 (or the unified half of a hybrid)
            for base in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
                f = base / path.lstrip("/") / "cpu.stat"
                if f.exists():
                    return f
        elif "cpuacct" in controllers.split(","):  # cgroup v1
            for name in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu"):
                f = CGROUP_ROOT / name / path.lstrip("/") / "cpuacct.usage"
                if f.exists():
                    return f
    return None


def cgroup_usage_s(usage_file: Path | None) -> float | None:
    """CPU seconds the cgroup has used (``usage_usec`` of v2's cpu.stat, v1's ``cpuacct.usage`` in ns)."""
    if usage_file is None:
        return None
    try:
        text = usage_file.read_text()
    except OSError:
        return None
    if usage_file.name == "cpuacct.usage":
        return int(text.strip()) / 1e9
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    return None


class Window:
    """Context manager around a timed window: ``cores`` is others' CPU time over ``wall_s``.

    ``own_s`` is this process tree's CPU time in the window, ``others_s`` everyone
    else's (machine-wide or in our cgroup, the larger).
    """

    def __init__(self):
        self.cores = 0.0
        self.wall_s = 0.0
        self.own_s = 0.0
        self.others_s = 0.0
        self._cgroup_file = _cgroup_usage_file()

    def _read(self) -> tuple[float, float, float, float | None]:
        return time.perf_counter(), machine_busy_s(), tree_cpu_s(), cgroup_usage_s(self._cgroup_file)

    def __enter__(self) -> "Window":
        self._start = self._read()
        return self

    def __exit__(self, *exc) -> None:
        end = self._read()
        (t0, busy0, own0, group0), (t1, busy1, own1, group1) = self._start, end
        self.wall_s = t1 - t0
        self.own_s = max(own1 - own0, 0.0)
        others = busy1 - busy0 - self.own_s
        if group0 is not None and group1 is not None:
            others = max(others, group1 - group0 - self.own_s)
        self.others_s = max(others, 0.0)
        self.cores = self.others_s / self.wall_s if self.wall_s > 0 else 0.0


BUSY = "import time\nwhile True: pass\n"


def start_detached_busy() -> int:
    """A busy loop outside this process tree, as a neighbour's job would be (setsid, then a second fork
    whose parent exits at once): its pid.  The contention test and scripts/contention_bench.py load
    the machine with it."""
    launcher = (
        "import os, subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', {BUSY!r}], start_new_session=True,\n"
        "                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(p.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())
