"""RSS and PSS of a process tree, on real processes."""

import os
import subprocess

import psutil

from bench.memory import tree_memory


def test_tree_memory_counts_a_process_and_its_children() -> None:
    alone = len(psutil.Process().children(recursive=True)) + 1
    with subprocess.Popen(["sleep", "30"]) as child:
        try:
            tree = tree_memory(os.getpid())
            leaf = tree_memory(child.pid)
        finally:
            child.kill()
    assert tree["processes"] == alone + 1
    assert leaf["processes"] == 1
    for figures in (tree, leaf):
        assert figures["rss MiB"] > 0
        assert figures["pss MiB"] <= figures["rss MiB"]
    # The test process holds a Python interpreter, Django and pytest: far more than sleep.
    assert tree["rss MiB"] > leaf["rss MiB"] + 10
