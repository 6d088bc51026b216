"""`billing quota`: the credit and quota monitor (projections/quota/monitor.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from infra.cli.common import OK, UsageError, at_or_billing_now, connect, not_found
from infra.config import Settings
from infra.render.terminal import print_json, print_monitor


def cmd_quota(args: argparse.Namespace, settings: Settings) -> int:
    """The credit and quota monitor of one subscription."""
    import psycopg

    from projections.quota import monitor as credit_monitor
    stack = connect(settings)
    with psycopg.connect(stack.database_url) as conn:
        readings = credit_monitor.read(conn, args.subscription)
    if readings is None:
        not_found(f"no quota rows for {args.subscription}")
    now = at_or_billing_now(args.at, settings)
    monitor = credit_monitor.view(readings, now)
    if args.chart:
        from infra.render.usage_chart import usage_chart_svg

        try:
            series = credit_monitor.chart_series(readings, args.metric)
        except KeyError:
            raise UsageError(f"--metric: {args.subscription} has no metric {args.metric!r}; "
                             f"it has {', '.join(r['metric'] for r in readings.rows)}",
                             "unknown_metric") from None
        Path(args.chart).write_text(usage_chart_svg(
            args.subscription, series.metric, series.cycle_start, series.cycle_end,
            series.per_day, series.allowance, series.daily_cap), encoding="utf-8")
    if args.json:
        print_json(monitor)
    else:
        print_monitor(monitor)
    return OK

