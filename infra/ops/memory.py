"""Peak resident memory of a process, for the workers' reports and the benchmarks."""

from __future__ import annotations

import resource
import sys


def peak_rss_mib(pid: int | None = None) -> float:
    """The peak resident set (VmHWM) of this process, or of process `pid`, in MiB; 0.0 if that
    process is gone. Not getrusage's ru_maxrss: it is kept across exec, so a spawned worker
    would report its parent's peak."""
    try:
        with open(f"/proc/{'self' if pid is None else pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if pid is None:  # no /proc (not Linux): the best there is, in bytes on macOS, else KiB
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
    return 0.0
