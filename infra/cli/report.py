"""`billing report`: the analytics views (docs/read-models.md, Analytics)."""

from __future__ import annotations

import argparse

from infra.cli.common import OK, connect
from infra.config import Settings
from infra.render.terminal import print_table

# The views of projections/analytics/store.py (a unit test keeps the two equal; listed here
# so that `billing --help` does not import the read models).
REPORTS = ("mrr_by_plan_month", "active_subscriptions", "movements_by_month",
           "revenue_by_invoice_month", "usage_per_metric_day", "credit_pack_revenue",
           "subscription_changes", "subscription_months")


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from projections.analytics import store as analytics
    stack = connect(settings)
    with psycopg.connect(stack.database_url) as conn:
        columns, rows = analytics.report(conn, args.name)
    print_table(columns, rows, "json" if args.json else args.format)
    return OK
