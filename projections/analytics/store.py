"""Analytics for analysts: a lifecycle fact table fed from the events, and documented SQL views in
schema `billing_read` (docs/read-models.md). Analysts get the role `billing_analyst`, which can
select these views and nothing else.

MRR counts each subscription's recurring plan price normalised to one month (price / months of
its billing period), excluding tax; usage, packs and one-off charges are not recurring.
"""

from __future__ import annotations

from typing import Any

import psycopg

ANALYST_ROLE = "billing_analyst"

TABLES = """
CREATE TABLE IF NOT EXISTS subscription_changes (
    subscription_id text NOT NULL,
    version bigint NOT NULL,
    at timestamptz NOT NULL,
    kind text NOT NULL,  -- new, upgrade, downgrade, churn, period_change, pause, resume
    plan_id text,
    monthly_price numeric NOT NULL,  -- recurring price per month after the change (0 = churned)
    currency text,
    PRIMARY KEY (subscription_id, version)
);
"""

VIEWS_DDL = """
CREATE SCHEMA IF NOT EXISTS billing_read;

CREATE OR REPLACE VIEW billing_read.subscription_changes AS
    SELECT subscription_id, at, kind, plan_id, round(monthly_price, 2) AS monthly_price, currency
    FROM subscription_changes;

CREATE OR REPLACE VIEW billing_read.months AS
    SELECT generate_series(date_trunc('month', min(at)), date_trunc('month', max(at)),
                           interval '1 month')::date AS month
    FROM subscription_changes;

CREATE OR REPLACE VIEW billing_read.subscription_months AS
    SELECT m.month, s.subscription_id, s.plan_id, round(s.monthly_price, 2) AS monthly_price,
           s.currency
    FROM billing_read.months m
    CROSS JOIN LATERAL (
        SELECT DISTINCT ON (c.subscription_id) c.subscription_id, c.plan_id, c.monthly_price,
               c.currency
        FROM subscription_changes c
        WHERE c.at < m.month + interval '1 month'
        ORDER BY c.subscription_id, c.at DESC, c.version DESC
    ) s;

CREATE OR REPLACE VIEW billing_read.mrr_by_plan_month AS
    -- Each subscription's monthly price in cents (as in subscription_months), summed.
    SELECT month, plan_id, currency, sum(monthly_price) AS mrr, sum(monthly_price) * 12 AS arr,
           count(*) FILTER (WHERE monthly_price > 0) AS paying_subscriptions
    FROM billing_read.subscription_months
    GROUP BY month, plan_id, currency;

CREATE OR REPLACE VIEW billing_read.active_subscriptions AS
    SELECT month, count(*) FILTER (WHERE kind_at_month <> 'churn') AS active,
           count(*) FILTER (WHERE kind_at_month <> 'churn' AND monthly_price > 0) AS paying
    FROM (
        SELECT m.month, s.monthly_price, s.kind AS kind_at_month
        FROM billing_read.months m
        CROSS JOIN LATERAL (
            SELECT DISTINCT ON (c.subscription_id) c.monthly_price, c.kind
            FROM subscription_changes c WHERE c.at < m.month + interval '1 month'
            ORDER BY c.subscription_id, c.at DESC, c.version DESC
        ) s
    ) x
    GROUP BY month;

CREATE OR REPLACE VIEW billing_read.movements_by_month AS
    SELECT date_trunc('month', at)::date AS month,
           count(*) FILTER (WHERE kind = 'new') AS new,
           count(*) FILTER (WHERE kind = 'upgrade') AS upgrades,
           count(*) FILTER (WHERE kind = 'downgrade') AS downgrades,
           count(*) FILTER (WHERE kind = 'churn') AS churned,
           count(*) FILTER (WHERE kind = 'pause') AS paused,
           count(*) FILTER (WHERE kind = 'resume') AS resumed
    FROM subscription_changes GROUP BY 1;

CREATE OR REPLACE VIEW billing_read.revenue_by_invoice_month AS
    -- Prepaid credits sold are money received for later, not revenue: the invoices they pay
    -- count when issued, so counting the purchase too would count that revenue twice.
    SELECT date_trunc('month', i.issued_at)::date AS month, i.currency,
           count(*) FILTER (WHERE i.kind = 'invoice') AS invoices,
           count(*) FILTER (WHERE i.kind = 'credit_note') AS credit_notes,
           sum(i.subtotal - coalesce(p.sold, 0)) FILTER (WHERE i.status <> 'void')
               AS net_revenue,
           sum(i.tax) FILTER (WHERE i.status <> 'void') AS tax,
           sum(i.total) FILTER (WHERE i.status <> 'void') AS gross,
           coalesce(sum(p.sold) FILTER (WHERE i.status <> 'void'), 0) AS prepaid_credits_sold
    FROM invoices i
    LEFT JOIN LATERAL (SELECT sum(l.amount) AS sold FROM invoice_lines l
                       WHERE l.number = i.number AND l.kind = 'credit_purchase') p ON true
    GROUP BY 1, 2;

CREATE OR REPLACE VIEW billing_read.usage_per_metric_day AS
    SELECT day, metric, sum(quantity) AS quantity, count(DISTINCT subscription_id) AS subscriptions
    FROM usage_daily GROUP BY day, metric;

CREATE OR REPLACE VIEW billing_read.credit_pack_revenue AS
    SELECT date_trunc('month', i.issued_at)::date AS month, i.currency,
           count(*) AS packs, sum(l.amount) AS revenue
    FROM invoice_lines l JOIN invoices i USING (number)
    WHERE l.kind = 'pack' AND i.status <> 'void'
    GROUP BY 1, 2;
"""

VIEWS = ("mrr_by_plan_month", "active_subscriptions", "movements_by_month",
         "revenue_by_invoice_month", "usage_per_metric_day", "credit_pack_revenue",
         "subscription_changes", "subscription_months")


def grant_analyst(conn: psycopg.Connection[Any]) -> None:
    """The analyst role reads the views of billing_read and nothing else."""
    conn.execute(f"""DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ANALYST_ROLE}') THEN
            CREATE ROLE {ANALYST_ROLE} NOLOGIN;
        END IF; END $$""")
    conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ANALYST_ROLE}")
    conn.execute(f"GRANT USAGE ON SCHEMA billing_read TO {ANALYST_ROLE}")
    conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA billing_read TO {ANALYST_ROLE}")


def insert_changes(cur: psycopg.Cursor[Any], rows: list[tuple[Any, ...]]) -> None:
    """(subscription, version, time, kind, plan, monthly price, currency) rows, in one go."""
    if rows:
        cur.execute("INSERT INTO subscription_changes SELECT * FROM unnest(%b::text[], "
                    "%b::bigint[], %b::timestamptz[], %b::text[], %b::text[], %b::numeric[], "
                    "%b::text[]) ON CONFLICT DO NOTHING",
                    tuple(list(c) for c in zip(*rows, strict=True)))


def reset(cur: psycopg.Cursor[Any]) -> None:
    cur.execute("DELETE FROM subscription_changes")


def report(conn: psycopg.Connection[Any], name: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    if name not in VIEWS:
        raise KeyError(name)
    order = "1, 2" if name not in ("active_subscriptions", "movements_by_month") else "1"
    cur = conn.execute(f"SELECT * FROM billing_read.{name} ORDER BY {order}")
    columns = [d.name for d in cur.description or []]
    rows = cur.fetchall()
    conn.commit()
    return columns, rows
