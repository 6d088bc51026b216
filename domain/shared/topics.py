"""The names classes are written under in the event store.

The event library names a stored event by its class's module and qualified name. Those names
are a stored format: a module moved or an event class taken out of its aggregate must go on
writing, and reading, the names already in the store. So each stored class states its topic
(the library reads a class's `TOPIC`), and the topic is registered for reading at import.
"""

from __future__ import annotations

import inspect

from eventsourcing.domain import CanMutateAggregate
from eventsourcing.utils import register_topic


def keep_topic(cls: type, topic: str) -> None:
    cls.TOPIC = topic  # type: ignore[attr-defined]
    register_topic(topic, cls)


def keep_topics(module: str, aggregate: type) -> None:
    """The aggregate and every event class it holds keep the topics first written from
    `module` (`module:Aggregate` and `module:Aggregate.Event`). Only leaf classes are events
    that are stored; a base class's `TOPIC` would pass on to every event derived from it."""
    keep_topic(aggregate, f"{module}:{aggregate.__name__}")
    for name, value in vars(aggregate).items():
        if inspect.isclass(value) and issubclass(value, CanMutateAggregate) \
                and not value.__subclasses__():
            keep_topic(value, f"{module}:{aggregate.__name__}.{name}")
