"""`deploy/cluster.py stop` ends every replica named in its folder and returns once they are gone."""

from __future__ import annotations

import subprocess
import time

from deploy import cluster


def test_stop_ends_the_replicas_and_does_not_wait_on_their_zombies(tmp_path):
    children = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    for index, child in enumerate(children, start=1):
        (tmp_path / f"replica-{index}.pid").write_text(f"{child.pid}\n")
    started = time.monotonic()
    cluster.stop(tmp_path)
    assert time.monotonic() - started < 10  # a child that exited is a zombie until reaped: not "still running"
    assert all(child.poll() is not None for child in children)
    assert not list(tmp_path.glob("*.pid"))
