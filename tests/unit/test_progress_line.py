"""Progress of long CLI work: on stderr, nothing for short work, a last figure at the end."""

from __future__ import annotations

import io

from infra.render.progress import ProgressLine


def test_nothing_is_shown_for_work_shorter_than_the_interval() -> None:
    out = io.StringIO()
    progress = ProgressLine("clock", 10, "subscriptions", out=out, every=3600)
    progress.advance(10)
    progress.finish()
    assert out.getvalue() == ""


def test_each_update_is_a_line_off_a_terminal_and_the_last_figure_is_shown() -> None:
    out = io.StringIO()
    progress = ProgressLine("publishing usage.jsonl", 400, "bytes", out=out, every=0)
    progress.advance(100)
    progress.advance(300)
    progress.finish()
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "publishing usage.jsonl: 100 of 400 bytes (25 %)",
        "publishing usage.jsonl: 400 of 400 bytes (100 %)"]
