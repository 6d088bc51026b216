"""Benchmark: the HTTP API (`billing serve`) while the workers run.

    python bench/api.py [--rates 1000,2000] [--seconds 20] [--usage-rate 200]
                        [--subscriptions 1000] [--batches 200] [--batch 1000]

1. Entitlement checks: `GET /v1/subscriptions/S/entitlements/tokens?requested=N` at each
   fixed rate (open loop: each request's latency counts from when it was due, so a stall is not
   hidden by sending less), from a client in another process, with a tenant's key, while
   usage flows through the workers (ingest, relay, projection, each its own process) at
   `--usage-rate`. Percentiles of the timed part, after a 3 s warm-up.
2. Usage over HTTP: `--batches` POSTs of `--batch` events each (an operator's key, two
   requests in flight), every event answered; beside it, the baseline of the same run: the
   same records published straight to the topic by the engine's batch publisher, which is
   what the API does after its checks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import loadgen
import orjson
from common import ROOT, WORKER_ROLES, peak_rss_mib, record, start_workers

from infra.api import keys
from infra.config import Settings
from infra.kafka import clients as kafka
from infra.stack.embedded import free_port, start_stack
from infra.wiring.engine import Engine


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * p / 100), len(ordered) - 1)]


# --- the client (its own process) --------------------------------------------------------

async def _entitlement_client(port: int, token: str, subs: list[str], rate: int,
                              seconds: float, warmup: float, connections: int
                              ) -> dict[str, object]:
    """Raw HTTP/1.1 over kept-alive connections: a Python HTTP library would cost more CPU
    per request than the server under test, on the same two cores. Request n is due at
    start + n/rate and goes on connection n % connections; a connection still waiting for
    its previous answer sends late, and the wait counts in the latency (open loop). The
    collector is off while timing: the instrument must not pause itself."""
    import gc

    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    total = int(rate * (warmup + seconds))
    start = time.perf_counter() + 0.05

    async def connection(index: int) -> None:
        reader, writer = opened[index]
        for n in range(index, total, connections):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(f"GET /v1/subscriptions/{subs[n % len(subs)]}/entitlements/tokens"
                         f"?requested=10 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         f"{token}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            if n >= rate * warmup:
                latencies.append(time.perf_counter() - due)
                status = head[9:12].decode()
                statuses[status] = statuses.get(status, 0) + 1

    gc.disable()
    await asyncio.gather(*(connection(i) for i in range(connections)))
    gc.enable()
    elapsed = time.perf_counter() - start
    import resource

    used = resource.getrusage(resource.RUSAGE_SELF)
    return {"sent_per_s": total / elapsed, "client_cpu": used.ru_utime + used.ru_stime,
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90), "p99": percentile(latencies, 99),
            "max": max(latencies), "statuses": statuses, "timed": len(latencies)}


def client_main(argv: list[str]) -> int:
    port, token, rate, seconds, warmup, subs = argv
    import uvloop

    result = uvloop.run(_entitlement_client(int(port), token, subs.split(","), int(rate),
                                            float(seconds), float(warmup), 16))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


# --- the floor: the least a Python server can do (its own process) ------------------------

_FLOOR_BODY = orjson.dumps({
    "subscription": "sub-00000", "metric": "tokens", "has_access": True, "used": "0",
    "limit": "1000000", "remaining": "1000000", "remaining_today": None,
    "enforcement": "hard", "reason": None, "as_of": "2026-12-07T00:00:00+00:00",
    "lag_seconds": "0.1", "pending_events": 0})
_FLOOR_ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                 + str(len(_FLOOR_BODY)).encode() + b"\r\n\r\n" + _FLOOR_BODY)


class _FloorProtocol(asyncio.Protocol):
    """Answers each request head with the same fixed 200: no parsing beyond the blank line,
    no lookup. The baseline the entitlement checks are compared with in the same run."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        self.pending += data
        heads = self.pending.count(b"\r\n\r\n")
        if heads:
            self.pending = self.pending.rsplit(b"\r\n\r\n", 1)[1]
            self.transport.write(_FLOOR_ANSWER * heads)  # type: ignore[attr-defined]


def floor_server_main(argv: list[str]) -> int:
    import uvloop

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_FloorProtocol, "127.0.0.1", int(argv[0]))
        async with server:
            await server.serve_forever()

    uvloop.run(serve())
    return 0


# --- the run -----------------------------------------------------------------------------

def usage_load(engine: Engine, subs: list[str], rate: int, stop: float) -> int:
    """Usage at `rate` events/s until time `stop`, so the workers are busy meanwhile."""
    publisher = loadgen.Publisher(engine.kafka_bootstrap, engine.settings,
                                  engine.settings.topics.usage)
    sent, tick = 0, 0.01
    per_tick = max(rate // 100, 1)
    start = time.perf_counter()
    while rate and time.perf_counter() < stop:
        at = datetime.now(UTC).isoformat()
        records = []
        for _ in range(per_tick):
            sid = subs[sent % len(subs)]
            key = sid.encode()
            partition = publisher.partition_of(key)
            assert partition is not None
            records.append((partition, key, orjson.dumps({
                "id": f"bg-{sent}", "subscription": sid, "metric": "tokens", "quantity": 1,
                "at": at})))
            sent += 1
        publisher.publish(records)
        delay = start + (sent // per_tick) * tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    publisher.close()
    return sent


def http_ingest(port: int, token: str, subs: list[str], batches: int, size: int
                ) -> tuple[float, dict[str, int]]:
    import httpx

    at = datetime.now(UTC).isoformat()
    bodies = [orjson.dumps([{"id": f"h{b}-{i}", "subscription": subs[(b * size + i) % len(subs)],
                             "metric": "tokens", "quantity": 1, "at": at}
                            for i in range(size)]) for b in range(batches)]
    counts: dict[str, int] = {}

    async def run() -> float:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"}) as client:
            queue = list(bodies)
            start = time.perf_counter()

            async def worker() -> None:
                while queue:
                    answer = (await client.post("/v1/usage", content=queue.pop())).json()
                    for status in ("accepted", "duplicate", "refused"):
                        counts[status] = counts.get(status, 0) + answer[status]
            await asyncio.gather(worker(), worker())
            return time.perf_counter() - start

    seconds = asyncio.run(run())
    return batches * size / seconds, counts


def raw_publish(engine: Engine, subs: list[str], batches: int, size: int) -> float:
    """The baseline: the same records through the engine's batch publisher, no HTTP."""
    producer = kafka.producer(engine.kafka_bootstrap, engine.settings)
    batcher = kafka.RecordBatches(producer)
    topic = engine.settings.topics.usage
    partition_of = kafka.KeyPartitions(lambda: producer.partitions_for(topic))
    partition_of.refresh()
    at = datetime.now(UTC).isoformat()
    start = time.perf_counter()
    for b in range(batches):
        records = []
        for i in range(size):
            sid = subs[(b * size + i) % len(subs)]
            key = sid.encode()
            partition = partition_of(key)
            assert partition is not None
            records.append((partition, key, orjson.dumps({
                "id": f"raw{b}-{i}", "subscription": sid, "metric": "tokens", "quantity": 1,
                "at": at})))
        batcher.publish(topic, records)
    seconds = time.perf_counter() - start
    producer.close()
    return batches * size / seconds


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        return client_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--floor-server":
        return floor_server_main(sys.argv[2:])
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="1000,2000",
                        help="entitlement checks per second, one run each")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--usage-rate", type=int, default=200,
                        help="usage events per second through the workers meanwhile")
    parser.add_argument("--subscriptions", type=int, default=1_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--serve-workers", type=int, default=1,
                        help="`billing serve --workers`: processes sharing the port")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env()
    with start_stack(settings) as stack:
        engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
        subs = [f"sub-{i:05d}" for i in range(args.subscriptions)]
        engine.app.subscribe_many([(s, "acct-bench", "enterprise") for s in subs],
                                  datetime.now(UTC).replace(microsecond=0))
        import psycopg

        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            tenant = keys.create(conn, account="acct-bench", admin=False).token
            operator = keys.create(conn, account=None, admin=True).token
        env = engine.subprocess_env()
        workers = start_workers(env)
        port, floor_port = free_port(), free_port()
        server = subprocess.Popen([sys.executable, "-m", "infra.cli", "serve", "--port",
                                   str(port), "--workers", str(args.serve_workers)], cwd=ROOT,
                                  env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            _wait_for(port)
            # Every subscription projected once before the checks (a row to answer from).
            usage_load(engine, subs, args.usage_rate, time.perf_counter() + 3)
            time.sleep(3)

            floor = subprocess.Popen([sys.executable, __file__, "--floor-server",
                                      str(floor_port)], cwd=ROOT)
            _wait_for(floor_port)
            processes = {"serve": server.pid, **{
                role: w.pid for role, w in zip(WORKER_ROLES, workers, strict=True)}}
            runs = []
            for rate in (int(r) for r in args.rates.split(",")):
                checks = timed_checks(engine, subs, args, rate, port, tenant, processes)
                time.sleep(2)
                floor_checks = timed_checks(engine, subs, args, rate, floor_port, tenant,
                                            {"floor server": floor.pid})
                runs.append((rate, checks, floor_checks))
                time.sleep(2)
            floor.send_signal(signal.SIGTERM)
            floor.wait(30)
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as answer:
                kept = orjson.loads(answer.read())["entitlement_cache"]
            baseline = raw_publish(engine, subs, args.batches, args.batch)
            ingest_rate, counts = http_ingest(port, operator, subs, args.batches, args.batch)
        finally:
            rss = {"serve": peak_rss_mib(server.pid)} | {
                role: peak_rss_mib(w.pid)
                for role, w in zip(WORKER_ROLES, workers, strict=True)}
            for p in (*workers, server):
                p.send_signal(signal.SIGTERM)
            for p in (*workers, server):
                p.wait(30)
            engine.close()
    lines = [
        f"- entitlement checks at {rate:,}/s asked ({checks['sent_per_s']:,.0f}/s sent, "
        f"open loop, {args.warmup:.0f}s warm-up + {args.seconds:.0f}s timed, "
        f"{checks['timed']:,} timed, {checks['statuses'].get('200', 0):,} answered 200), "
        f"while {args.usage_rate:,} usage events/s flow through the workers: "
        f"{_latencies(checks)}; CPU (cores): {_cpu(checks)}. Baseline in the same run, the "
        f"same client and load against a server answering a fixed 200 (no parsing, no "
        f"lookup): {_latencies(floor)}; CPU (cores): {_cpu(floor)}"
        for rate, checks, floor in runs]
    lines += [
        f"- usage over HTTP: {args.batches} batches of {args.batch:,} events, two requests "
        f"in flight: **{ingest_rate:,.0f} events/s** answered and published "
        f"({counts.get('accepted', 0):,} accepted, {counts.get('refused', 0):,} refused); "
        f"baseline in the same run, the same records published straight to the topic: "
        f"{baseline:,.0f} events/s ({ingest_rate / baseline:.2f} x)",
        f"- entitlement readings kept: {kept['hits']:,} answers from them, {kept['misses']:,} "
        f"from the database",
        "- peak RSS: " + ", ".join(f"{name} {mib:,.0f} MiB" for name, mib in rss.items()),
        f"- {args.subscriptions:,} subscriptions; `billing serve` (one uvicorn process) and "
        f"the workers each in their own process; the client in another; stack "
        f"{settings.stack}, broker {settings.broker}",
    ]
    record("HTTP API", lines, not args.no_record)
    return 0


def timed_checks(engine: Engine, subs: list[str], args: argparse.Namespace, rate: int,
                 port: int, token: str, processes: dict[str, int]) -> dict:
    """The client at `rate` against `port` for the warm-up and timed seconds while usage
    flows through the workers, with the CPU each of `processes` used meanwhile."""
    import threading

    cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
    machine_before = machine_busy_seconds()
    started = time.perf_counter()
    stop_at = time.perf_counter() + args.warmup + args.seconds + 2
    background = threading.Thread(target=usage_load,
                                  args=(engine, subs, args.usage_rate, stop_at))
    background.start()
    client = subprocess.run(
        [sys.executable, __file__, "--client", str(port), token, str(rate),
         str(args.seconds), str(args.warmup), ",".join(subs)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    background.join()
    if client.returncode != 0:
        raise RuntimeError(client.stderr[-2000:])
    checks = orjson.loads(client.stdout.strip().splitlines()[-1])
    seconds = time.perf_counter() - started
    checks["cpu"] = {name: (cpu_seconds(pid) - cpu_before[name]) / seconds
                     for name, pid in processes.items()}
    checks["cpu"]["client"] = checks["client_cpu"] / seconds
    checks["cpu"]["whole machine"] = (machine_busy_seconds() - machine_before) / seconds
    return checks


def _latencies(checks: dict) -> str:
    return (f"p50 **{checks['p50'] * 1000:.2f} ms**, p90 {checks['p90'] * 1000:.2f} ms, "
            f"p99 **{checks['p99'] * 1000:.2f} ms**, max {checks['max'] * 1000:.1f} ms")


def _cpu(checks: dict) -> str:
    return ", ".join(f"{name} {share:.2f}" for name, share in checks["cpu"].items())


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle so far (Linux /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _wait_for(port: int) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("billing serve did not start")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
