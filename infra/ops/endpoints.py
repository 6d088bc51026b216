"""Each `billing run` process's HTTP endpoints for operators and orchestrators:
`/healthz` (200 while every worker thread lives and no partition is stalled or failing),
`/readyz` (200 once the workers run and the last heartbeat reached the database) and
`/metrics` (Prometheus: per-partition position and lag, records, batches, failures,
dead letters by code, batch durations). Read from the workers when scraped: nothing is added
to the batch path but one duration per poll."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class WorkerCollector(Collector):
    def __init__(self, workers: Any, stall_seconds: float) -> None:
        self.workers = workers
        self.stall_seconds = stall_seconds

    def collect(self) -> Iterator[Any]:
        details = self.workers.details(self.stall_seconds)
        lag = GaugeMetricFamily("billing_partition_lag", "Input waiting per partition",
                                labels=["role", "partition"])
        position = GaugeMetricFamily("billing_partition_position", "Last offset handled",
                                     labels=["role", "partition"])
        idle = GaugeMetricFamily("billing_partition_seconds_since_progress",
                                 "Seconds since the partition last progressed",
                                 labels=["role", "partition"])
        healthy = GaugeMetricFamily("billing_worker_healthy", "1 when healthy", labels=["role"])
        records = CounterMetricFamily("billing_records", "Records handled", labels=["role"])
        failures = CounterMetricFamily("billing_batch_failures", "Failed batches",
                                       labels=["role"])
        quarantined = CounterMetricFamily("billing_quarantined",
                                          "Records dead-lettered as unprocessable",
                                          labels=["role"])
        for role, detail in details.items():
            for partition, p in detail.get("partitions", {}).items():
                if p.get("lag") is not None:
                    lag.add_metric([role, partition], p["lag"])
                if p.get("position") is not None:
                    position.add_metric([role, partition], p["position"])
                idle.add_metric([role, partition], p.get("seconds_since_progress", 0))
            healthy.add_metric([role], 1 if detail.get("healthy") else 0)
            records.add_metric([role], detail.get("records", detail.get("published", 0)))
            failures.add_metric([role], detail.get("failures", 0))
            quarantined.add_metric([role], detail.get("quarantined", 0))
        yield from (lag, position, idle, healthy, records, failures, quarantined)
        yield from self._outcomes()
        yield from self._caches()

    def _caches(self) -> Iterator[Any]:
        """Each writing role's subscription cache (BILLING_CACHE_SUBSCRIPTIONS): its size,
        the batch lookups it answered and the subscriptions read from the store instead."""
        size = GaugeMetricFamily("billing_cached_subscriptions", "Subscriptions held in memory",
                                 labels=["role"])
        hits = CounterMetricFamily("billing_cache_hits",
                                   "Subscriptions a batch found in the cache", labels=["role"])
        loads = CounterMetricFamily("billing_cache_loads",
                                    "Subscriptions read from the event store", labels=["role"])
        for role, app in self.workers.caches().items():
            size.add_metric([role], app.cached_count)
            hits.add_metric([role], app.cache_hits)
            loads.add_metric([role], app.cache_loads)
        yield from (size, hits, loads)

    def _outcomes(self) -> Iterator[Any]:
        applied = CounterMetricFamily("billing_usage_applied", "Usage events applied")
        duplicates = CounterMetricFamily("billing_usage_duplicates", "Usage ids seen before")
        letters = CounterMetricFamily("billing_dead_lettered", "Dead letters by code",
                                      labels=["role", "code"])
        if self.workers.ingestor is not None:
            stats = self.workers.ingestor.stats
            applied.add_metric([], stats.accepted)
            duplicates.add_metric([], stats.duplicates)
            for code, n in sorted(stats.by_code.items()):
                letters.add_metric(["ingest", code], n)
        if self.workers.commander is not None:
            for code, n in sorted(self.workers.commander.stats.by_code.items()):
                letters.add_metric(["commands", code], n)
        yield from (applied, duplicates, letters)


class Endpoints:
    def __init__(self, workers: Any, stall_seconds: float,
                 ready: Callable[[], bool]) -> None:
        self.workers = workers
        self.stall_seconds = stall_seconds
        self.ready = ready
        self.registry = CollectorRegistry()
        self.registry.register(WorkerCollector(workers, stall_seconds))
        self.durations = Histogram("billing_batch_seconds", "Time to handle one poll",
                                   ["role"], registry=self.registry,
                                   buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self._server: ThreadingHTTPServer | None = None

    def healthz(self) -> tuple[int, dict[str, Any]]:
        alive = self.workers.alive()
        details = self.workers.details(self.stall_seconds)
        ok = bool(alive) and all(alive.values()) and all(d.get("healthy") for d in
                                                         details.values())
        return (200 if ok else 503), {"healthy": ok, "threads": alive, "workers": details}

    def metrics(self) -> bytes:
        for role, part in self.workers.parts():
            taken, part.batch_seconds = getattr(part, "batch_seconds", []), []
            for seconds in taken:
                self.durations.labels(role).observe(seconds)
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> int:
        """Serve in a daemon thread; returns the port (an ephemeral one for port 0)."""
        endpoints = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    if self.path == "/metrics":
                        self._send(200, endpoints.metrics(), CONTENT_TYPE_LATEST)
                    elif self.path == "/healthz":
                        status, body = endpoints.healthz()
                        self._send(status, orjson.dumps(body, default=str), "application/json")
                    elif self.path == "/readyz":
                        ok = endpoints.ready()
                        self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n",
                                   "text/plain")
                    else:
                        self._send(404, b"not found\n", "text/plain")
                except Exception as e:
                    self._send(500, f"{type(e).__name__}\n".encode(), "text/plain")

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the worker's own log

        self._server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=self._server.serve_forever, name="endpoints",
                         daemon=True).start()
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class BeatClock:
    """When the last heartbeat reached the database: /readyz is 200 while it is recent."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self.last: float | None = None

    def reached(self) -> None:
        self.last = time.monotonic()

    def recent(self) -> bool:
        return self.last is not None and time.monotonic() - self.last <= self.max_age
