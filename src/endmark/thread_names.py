"""Native thread names, so that `top -H`, py-spy and the benchmark's per-thread CPU can tell
endmark's threads apart (Python before 3.14 names threads for itself only)."""

from __future__ import annotations

import threading
from pathlib import Path

SCHEDULER = "endmark-sched"
EVENT_LOOP = "endmark-loop"


def name_this_thread(name: str) -> None:
    """Give the calling thread `name` (at most 15 bytes: the kernel's limit) where the OS
    lets a process name its threads (Linux, through /proc); elsewhere nothing happens.

    Threads this one starts afterwards inherit the name (llama.cpp's OpenMP workers, started
    by the scheduler's first decode): the benchmark takes the oldest thread of a name."""
    try:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(name[:15])
    except OSError:
        pass
