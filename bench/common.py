"""Shared by the benchmarks: the machine line and appending figures to docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import resource
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def machine() -> str:
    cores = os.cpu_count()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cores} cores, {mem_gib:.0f} GiB, {platform.python_implementation()} "
            f"{platform.python_version()}")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def record(title: str, lines: list[str], enabled: bool = True) -> None:
    command = "python " + " ".join([Path(sys.argv[0]).relative_to(ROOT).as_posix()
                                    if Path(sys.argv[0]).is_absolute() else sys.argv[0],
                                    *sys.argv[1:]])
    block = [f"## {title}: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "",
             f"- command: `{command.strip()}`", f"- machine: {machine()}", *lines]
    print("\n".join(block))
    if not enabled:
        return
    path = ROOT / "docs" / "BENCHMARKS.md"
    header = "# Benchmarks\n\nFigures appended by the scripts in `bench/`; newest last.\n"
    text = path.read_text() if path.exists() else header
    path.write_text(text + "\n" + "\n".join(block) + "\n")
