"""`billing run`: the workers of one process."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time

from infra.cli.common import _stack_file
from infra.config import Settings, redact_url
from infra.stack.embedded import start_stack

log = logging.getLogger("billing")
# The worker roles of infra/wiring/engine.py (a unit test keeps the two equal; listed here so
# that `billing --help` does not import the engine).
ROLES = ("ingest", "commands", "relay", "project", "invoicer", "invoices", "audit")


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from infra.ops.endpoints import BeatClock, Endpoints
    from infra.ops.health import Heartbeat
    from infra.wiring.engine import Engine, Workers

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stack = start_stack(settings)
    stack_file = _stack_file(settings)
    try:
        engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
        if stack.mode == "embedded":
            stack_file.parent.mkdir(parents=True, exist_ok=True)
            # The URL holds the embedded superuser's password: readable by this user only.
            stack_file.touch(mode=0o600)
            stack_file.chmod(0o600)
            stack_file.write_text(json.dumps({
                "pid": os.getpid(), "database_url": stack.database_url,
                "kafka_bootstrap": stack.kafka_bootstrap}))
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
        while not stop.wait(min(args.report_every, HEARTBEAT_SECONDS)):
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
        print("stopping: finishing the batches in hand", flush=True)
        endpoints.close()
        workers.stop()
        heartbeat.stopped()
        engine.close()
    finally:
        if stack.mode == "embedded":
            stack_file.unlink(missing_ok=True)
        stack.close()
    return 0


HEARTBEAT_SECONDS = 2.0
