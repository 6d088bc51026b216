"""`billing run`: the workers of one process."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

from infra.config import ConfigError, Settings, redact_url
from infra.stack import local_deployment
from infra.stack.embedded import Stack, start_stack

log = logging.getLogger("billing")
# The worker roles of infra/wiring/engine.py (a unit test keeps the two equal; listed here so
# that `billing --help` does not import the engine).
ROLES = ("ingest", "commands", "relay", "project", "invoicer", "invoices", "audit")


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from infra.ops.endpoints import BeatClock, Endpoints
    from infra.ops.health import Heartbeat
    from infra.ops.stack_watch import StackWatch
    from infra.wiring.engine import Engine, Workers

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stack = _open_stack(args, settings)
    try:
        engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
        roles = list(args.only or ROLES)
        workers = Workers.of(engine, group=args.group, roles=tuple(roles))
        workers.start()
        heartbeat = Heartbeat(stack.database_url, roles)
        beats = BeatClock(max_age=5 * HEARTBEAT_SECONDS)
        endpoints = Endpoints(workers, settings.stall_seconds, beats.recent)
        host, _, port = (args.endpoints or settings.endpoints).rpartition(":")
        port = endpoints.serve(host or "127.0.0.1", int(port or 0))
        print(f"billing workers running (postgres {redact_url(stack.database_url)}, kafka "
              f"{stack.kafka_bootstrap}); /healthz /readyz /metrics on "
              f"http://{host or '127.0.0.1'}:{port}; Ctrl-C or SIGTERM stops them", flush=True)
        last_report = time.monotonic()
        status = 0
        watch = StackWatch(settings, stack, engine.topic_identities).start()
        while not stop.wait(min(args.report_every, HEARTBEAT_SECONDS)):
            problem = watch.problem
            if problem is not None:
                print(problem, flush=True)
                log.error("%s", problem)
                status = 1
                break
            try:
                details = workers.details(settings.stall_seconds)
                for detail in details.values():
                    detail["endpoints"] = port
                heartbeat.beat(workers.alive(), details)
                beats.reached()
            except Exception as e:  # the database may be restarting: beat again next time
                log.warning("heartbeat not written: %s", type(e).__name__)
            if time.monotonic() - last_report >= args.report_every:
                print(workers.report(), flush=True)
                last_report = time.monotonic()
        watch.stop()
        print("stopping: finishing the batches in hand", flush=True)
        endpoints.close()
        workers.stop()
        heartbeat.stopped()
        engine.close()
    finally:
        stack.close()
    return status


def _open_stack(args: argparse.Namespace, settings: Settings) -> Stack:
    """On the embedded default, the data directory's own stack (kept across restarts; joined
    if another `billing run` owns it); otherwise the configured one."""
    if settings.stack != "embedded":
        if args.fresh:
            raise ConfigError("--fresh deletes the embedded stack's data: it does nothing with "
                              f"BILLING_STACK={settings.stack}")
        return start_stack(settings)
    stack = local_deployment.open_stack(settings, fresh=args.fresh)
    if stack.joined:
        print(f"joining the stack that another billing run owns in {settings.data_dir}",
              flush=True)
    return stack


HEARTBEAT_SECONDS = 2.0
