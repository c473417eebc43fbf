"""The process walk (sampler.tree) that the harness's sampler (which processes are ours) and
the load-generator comparison (a generator's CPU, user and system apart) both use."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from sobranie_bench.harness.sampler import ProcStat, tree
from sobranie_bench.loadgen import tree_cpu

BUSY = ("import time\n"
        "while time.process_time() < 0.2: pass\n"
        "print('busy', flush=True)\n"
        "time.sleep(60)\n")


def proc(ppid: int, sid: int) -> ProcStat:
    return ProcStat(ppid=ppid, sid=sid, start=0, user_s=0.0, system_s=0.0)


def test_the_walk_takes_descendants_and_the_sessions_they_lead_and_nothing_else() -> None:
    table = {1: proc(0, 1),
             10: proc(1, 5),     # the root (not a session leader)
             11: proc(10, 5),    # its child
             12: proc(11, 5),    # its grandchild
             20: proc(10, 20),   # a child that leads a session of its own (a browser)
             30: proc(1, 20),    # forked twice and re-parented to init, in that session
             40: proc(1, 40),    # someone else's session leader
             41: proc(40, 40),   # and its child
             5: proc(1, 5)}      # the root's session leader: not below the root
    assert tree(table, [10, 99]) == {10, 11, 12, 20, 30}  # 99: gone, not in the table


def test_a_generators_cpu_holds_its_childrens_user_and_system_time_apart() -> None:
    child = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"busy\n"
        mine, theirs = psutil.Process().cpu_times(), psutil.Process(child.pid).cpu_times()
        user, system, run_ns = tree_cpu(os.getpid())
        assert user >= mine.user + theirs.user - 1e-6 and theirs.user > 0
        assert system >= mine.system + theirs.system - 1e-6
        assert run_ns > 0
        assert tree_cpu(child.pid)[0] < user  # the child's own tree leaves its parent out
    finally:
        child.kill()
        child.wait()
