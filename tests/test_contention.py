"""The contention meter: others' CPU time counts, this process tree's own does not."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from rnnbench import contention
from rnnbench.contention import BUSY, start_detached_busy
from rnnbench.suites import SETTINGS

pytestmark = pytest.mark.skipif(not contention.available()[0], reason="needs Linux /proc")



def _cpu_s(pid: int) -> float:
    f = contention._stat_fields(pid)
    return (int(f[11]) + int(f[12])) / contention._HZ


def test_detached_busy_process_counts_as_contention_and_sets_the_flag():
    pid = start_detached_busy()
    try:
        assert pid not in contention.descendants(os.getpid())  # it is someone else's
        time.sleep(0.2)  # interpreter start-up
        before = _cpu_s(pid)
        with contention.Window() as w:
            time.sleep(1.0)
        busy_s = _cpu_s(pid) - before
    finally:
        os.kill(pid, signal.SIGKILL)
    assert busy_s > 0.05  # it did run meanwhile
    assert w.others_s >= busy_s - 0.05  # its CPU time is in others' (ticks are 10 ms)
    assert w.own_s < 0.05  # and not in ours: we slept
    assert w.cores > SETTINGS.contention_threshold


def test_own_children_are_not_contention():
    child = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(0.2)
        before = _cpu_s(child.pid)
        with contention.Window() as w:
            time.sleep(1.0)
        child_s = _cpu_s(child.pid) - before
    finally:
        child.kill()
        child.wait()
    assert child_s > 0.05
    assert w.own_s >= child_s - 0.05  # the child is ours
    assert w.wall_s == pytest.approx(1.0, abs=0.3)


def test_reaped_child_time_stays_in_the_tree():
    """A child that exits inside the window moves its time into our cutime: still ours, not others'."""
    with contention.Window() as w:
        subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\n"
                        "while time.process_time() - t < 0.3: pass\n"], check=True)
    assert w.own_s >= 0.25


def test_cores_is_others_time_over_wall_time():
    with contention.Window() as w:
        time.sleep(0.3)
    assert w.cores == pytest.approx(w.others_s / w.wall_s)
    assert w.cores >= 0.0 and w.others_s >= 0.0
