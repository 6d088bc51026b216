"""A bar chart of this cycle's usage per day, as SVG (no dependencies; opens in any browser)."""

from __future__ import annotations

import html
from datetime import date, datetime, timedelta
from decimal import Decimal


def usage_chart_svg(subscription: str, metric: str, cycle_start: datetime, cycle_end: datetime,
                    per_day: dict[date, Decimal], limit: Decimal | None = None,
                    daily_cap: Decimal | None = None) -> str:
    days = [(cycle_start + timedelta(days=i)).date()
            for i in range(max((cycle_end - cycle_start).days, 1))]
    values = [per_day.get(d, Decimal(0)) for d in days]
    top = max([*values, daily_cap or Decimal(0), Decimal(1)])
    width, height, left, bottom, gap = 760, 320, 60, 40, 2
    plot_w, plot_h = width - left - 20, height - bottom - 50
    bar = plot_w / len(days)
    bars = []
    for i, (d, v) in enumerate(zip(days, values, strict=True)):
        h = float(v / top) * plot_h
        x = left + i * bar
        bars.append(f'<rect x="{x + gap / 2:.1f}" y="{50 + plot_h - h:.1f}" '
                    f'width="{max(bar - gap, 1):.1f}" height="{h:.1f}" fill="#3b82f6">'
                    f"<title>{d.isoformat()}: {v}</title></rect>")
        if i % max(len(days) // 10, 1) == 0:
            bars.append(f'<text x="{x + bar / 2:.1f}" y="{height - 22}" font-size="10" '
                        f'text-anchor="middle">{d.strftime("%d %b")}</text>')
    ticks = []
    for k in range(5):
        value = top * k / 4
        y = 50 + plot_h - plot_h * k / 4
        ticks.append(f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#e5e7eb"/><text x="{left - 6}" y="{y + 3:.1f}" font-size="10" '
                     f'text-anchor="end">{_short(value)}</text>')
    cap_line = ""
    if daily_cap is not None:
        y = 50 + plot_h - float(daily_cap / top) * plot_h
        cap_line = (f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" '
                    f'stroke="#dc2626" stroke-dasharray="4 3"/><text x="{width - 22}" '
                    f'y="{y - 4:.1f}" font-size="10" fill="#dc2626" text-anchor="end">'
                    f"daily cap {daily_cap}</text>")
    total = sum(values, Decimal(0))
    subtitle = f"used {total}" + (f" of {limit}" if limit is not None else "")
    e = html.escape
    title = f"{e(metric)} per day - {e(subscription)}"
    period = f"cycle {cycle_start:%Y-%m-%d} to {cycle_end:%Y-%m-%d}, {e(subtitle)}"
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"
 viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="22" font-size="15" font-weight="bold">{title}</text>
<text x="{left}" y="40" font-size="11" fill="#555">{period}</text>
{''.join(ticks)}
{''.join(bars)}
{cap_line}
<line x1="{left}" x2="{left}" y1="50" y2="{50 + plot_h}" stroke="#111"/>
<line x1="{left}" x2="{width - 20}" y1="{50 + plot_h}" y2="{50 + plot_h}" stroke="#111"/>
</svg>
"""


def _short(value: Decimal) -> str:
    v = float(value)
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.1f}{unit}"
    return f"{v:.0f}" if v == int(v) else f"{v:.1f}"
