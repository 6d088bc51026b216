"""What `billing run` checks beside the workers, every few seconds: that the stack it works on
is still the one it started on. A worker cannot see these from inside its loop:

- a joined run's owner stopped (its PostgreSQL and broker went with it);
- the embedded broker this run started has exited;
- the broker lost its topics while the workers ran (a Kafka volume recreated, a topic deleted
  and created again): the positions belong to the old topics, and only a start resets them
  (infra/kafka/topic_identity.py).

Each ends the run with exit code 1 and the reason, so that a supervisor (Compose's
`restart: unless-stopped`, systemd) starts it again, which recovers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from infra.config import Settings
from infra.kafka import topic_identity
from infra.stack import local_deployment

log = logging.getLogger(__name__)


class StackWatch:
    def __init__(self, settings: Settings, stack: Any, every: float = 10.0) -> None:
        self.settings, self.stack, self.every = settings, stack, every
        self._next = time.monotonic() + every

    def problem(self) -> str | None:
        """Why the run must stop, or None; the broker is asked at most once per `every`."""
        if getattr(self.stack, "joined", False) and not local_deployment.owner_alive(
                self.settings):
            return "the billing run that owns this directory's stack stopped: stopping"
        broker: Any = getattr(self.stack, "broker", None)
        process = getattr(broker, "_proc", None)
        if process is not None and process.poll() is not None:
            return (f"the embedded broker exited (code {process.returncode}, its log: "
                    f"{broker.log_path}): stopping; start billing run again")
        if time.monotonic() < self._next:
            return None
        self._next = time.monotonic() + self.every
        return self._topics_changed()

    def _topics_changed(self) -> str | None:
        try:
            now = topic_identity.current(self.stack.kafka_bootstrap, self.settings.topics.all(),
                                         self.settings.kafka_options)
            with psycopg.connect(self.stack.database_url, connect_timeout=5) as conn:
                changed = topic_identity.changed_topics(conn, now)
        except Exception as e:  # unreachable for now: health reports it; look again later
            log.debug("topic identities not checked: %s", type(e).__name__)
            return None
        if not changed:
            return None
        return (f"the broker's topics changed while the workers ran ({', '.join(sorted(changed))}"
                f"): stopping; start billing run again, which resets the positions taken on "
                f"the old topics and publishes the event store again")
