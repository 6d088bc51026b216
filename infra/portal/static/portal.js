// The two places where a portal page updates itself: the credit monitor (server-sent events)
// and a request being applied (asked again every half second until it is).
"use strict";

function rows(tbody, entries) {
  if (!tbody) return;
  tbody.replaceChildren(...entries.map(([name, ...values]) => {
    const tr = document.createElement("tr");
    for (const [text, cls] of [[name, ""], ...values.map((v) => [v, "amount"])]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  }));
}

function showMonitor(root, view) {
  for (const metric of view.metrics) {
    const section = root.querySelector(`section[data-metric="${CSS.escape(metric.metric)}"]`);
    if (!section) continue;
    for (const field of ["remaining", "used", "today_used", "remaining_today"]) {
      const el = section.querySelector(`[data-field="${field}"]`);
      if (el && metric[field] !== null) el.textContent = metric[field];
    }
    rows(section.querySelector('[data-field="per_day"]'), Object.entries(metric.per_day));
    rows(section.querySelector('[data-field="per_member"]'), Object.entries(metric.per_member));
    if (metric.per_group) {
      rows(section.querySelector('[data-field="per_group"]'), Object.entries(metric.per_group)
        .map(([group, v]) => [group || "(none)", v.used, v.remaining]));
    }
  }
  const live = root.querySelector('[data-field="live"]');
  if (live) live.textContent = `Live · updated ${new Date().toLocaleTimeString()}`;
}

function followMonitor() {
  const root = document.getElementById("monitor");
  if (!root) return;
  const source = new EventSource(root.dataset.stream);
  source.addEventListener("monitor", (event) => showMonitor(root, JSON.parse(event.data)));
}

function awaitOutcome() {
  const outcome = document.querySelector('[data-testid="outcome"][data-status="pending"]');
  if (!outcome) return;
  const url = `/portal/commands/${encodeURIComponent(outcome.dataset.command)}/status`;
  const ask = async () => {
    try {
      const answer = await fetch(url, {credentials: "same-origin"});
      if (answer.ok && (await answer.json()).status !== "pending") {
        window.location.reload();
        return;
      }
    } catch (error) {
      // the server restarting, the network gone: ask again
    }
    setTimeout(ask, 500);
  };
  setTimeout(ask, 500);
}

document.addEventListener("DOMContentLoaded", () => {
  followMonitor();
  awaitOutcome();
});
