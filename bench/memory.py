"""Memory of a service process: the resident set (RSS) and the proportional set (PSS) summed over
its process tree (gunicorn and its workers, Celery and its pool children), by psutil."""

from dataclasses import dataclass
from typing import Any

import psutil

MIB = 1024 * 1024


def tree_memory(pid: int) -> dict[str, Any]:
    """RSS and PSS in MiB of ``pid`` and all its descendants, and how many processes that is.

    RSS counts pages that forked children still share with their parent once per process, so
    the sum overstates a prefork tree; PSS splits each shared page between its sharers, so the
    PSS sum is what the tree really holds."""
    root = psutil.Process(pid)
    rss = pss = 0
    count = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a child that just exited (a recycled pool process)
        rss += info.rss
        pss += info.pss
        count += 1
    return {"rss MiB": round(rss / MIB, 1), "pss MiB": round(pss / MIB, 1), "processes": count}


@dataclass
class Snapshot:
    process: str  # "web", "worker", "peer worker"
    moment: str  # "idle before the run", "after <scenario>", ...
    figures: dict[str, Any]


def largest_after(snapshots: list[Snapshot], process: str) -> Snapshot | None:
    """The snapshot of ``process`` with the largest RSS among those after its first one."""
    later = [s for s in snapshots if s.process == process][1:]
    return max(later, key=lambda s: s.figures["rss MiB"], default=None)
