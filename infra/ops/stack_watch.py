"""What `billing run` checks beside the workers, in a thread of its own every few seconds:
that the stack it works on is still the one it started on. A worker cannot see these from
inside its loop:

- a joined run's owner stopped, or was replaced by another (new addresses);
- the embedded broker this run started has exited;
- the broker's topics are not the ones this process started on (a Kafka volume recreated, a
  topic deleted and created again), whether or not another process has since recorded the new
  ones: this process's positions, in memory too, belong to the old topics, and only a start
  resets them (infra/kafka/topic_identity.py).

Each ends the run with exit code 1 and the reason, so that a supervisor (Compose's
`restart: unless-stopped`, systemd) starts it again, which recovers. A broker that does not
answer is not a reason (health reports it); asking it may take kafka-python's bootstrap wait,
which is why the checks run beside the main loop, not in it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from infra.config import Settings
from infra.kafka import topic_identity
from infra.stack import local_deployment

log = logging.getLogger(__name__)


class StackWatch:
    def __init__(self, settings: Settings, stack: Any, started_on: Mapping[str, str],
                 every: float = 5.0) -> None:
        self.settings, self.stack, self.every = settings, stack, every
        self.started_on = dict(started_on)
        self.problem: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-watch", daemon=True)

    def start(self) -> StackWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every) and self.problem is None:
            try:
                self.problem = self.check()
            except Exception as e:  # never the watch's failure to stop the workers
                log.debug("stack not checked: %s", type(e).__name__)

    def check(self) -> str | None:
        """Why the run must stop, or None."""
        if self.stack.joined:
            running = local_deployment.running_stack(self.settings)
            if running is None or (running["database_url"], running["kafka_bootstrap"]) != (
                    self.stack.database_url, self.stack.kafka_bootstrap):
                return "the billing run that owns this directory's stack stopped: stopping"
        broker: Any = getattr(self.stack, "broker", None)
        process = getattr(broker, "_proc", None)
        if process is not None and process.poll() is not None:
            return (f"the embedded broker exited (code {process.returncode}, its log: "
                    f"{broker.log_path}): stopping; start billing run again")
        return self._topics_changed()

    def _topics_changed(self) -> str | None:
        try:
            now = topic_identity.current(self.stack.kafka_bootstrap, list(self.started_on),
                                         self.settings.kafka_options)
        except Exception as e:  # unreachable for now: health reports it; look again later
            log.debug("topic identities not read: %s", type(e).__name__)
            return None
        changed = sorted(t for t, identity in now.items()
                         if t in self.started_on and self.started_on[t] != identity)
        if not changed:
            return None
        return (f"the broker's topics changed while the workers ran ({', '.join(changed)}): "
                f"stopping; start billing run again, which resets the positions taken on the "
                f"old topics and publishes the event store again")
