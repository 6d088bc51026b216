"""Read-only values shared between aggregates in memory.

A subscription holds its plan's terms (prices, allowances, limits: about 3.5 KiB of Python
objects), and thousands of subscriptions on one plan hold equal terms. A worker caching tens of
thousands of subscriptions kept one copy each: half of its memory. `shared` hands out one
read-only copy per distinct value instead. Read-only because shared: a change made in place to
one subscription's terms would change every other's, so `FrozenDict` and `FrozenList` refuse
changes in place (a TypeError a test meets at once); a copy (`copy.deepcopy`, `thawed`) is
mutable again. They are a `dict` and a `list` to every reader, orjson included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, NoReturn, TypeVar

import orjson

LIMIT = 10_000  # distinct values kept; deals' overrides make a subscription's terms its own
T = TypeVar("T")


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(f"a shared {type(self).__name__} is read-only: change a copy (thawed)")


class FrozenDict(dict[str, Any]):
    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return thawed(self)

    def __reduce__(self) -> Any:
        return (dict, (thawed(self),))


class FrozenList(list[Any]):
    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = remove = pop = clear = sort = reverse = _refuse

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return thawed(self)

    def __reduce__(self) -> Any:
        return (list, (thawed(self),))


def frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return FrozenDict({k: frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList(frozen(v) for v in value)
    return value


def thawed(value: Any) -> Any:
    """A mutable deep copy."""
    if isinstance(value, dict):
        return {k: thawed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [thawed(v) for v in value]
    return value


_shared: dict[bytes, FrozenDict] = {}


def shared(value: dict[str, Any]) -> dict[str, Any]:
    """The one read-only copy of a JSON-like value held in this process (keyed by its JSON,
    keys sorted)."""
    if type(value) is FrozenDict:
        return value
    try:
        key = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # not plain JSON: kept as it is, unshared
        return value
    found = _shared.get(key)
    if found is None:
        if len(_shared) >= LIMIT:
            _shared.clear()  # the aggregates keep theirs; new loads share anew
        found = _shared[key] = frozen(value)
    return found


def kept_per_shared_value(fact: Callable[[Mapping[str, Any]], T]
                          ) -> Callable[[Mapping[str, Any]], T]:
    """`fact` of terms, worked out once per shared (read-only) value and then looked up; of
    any other value, worked out each time. For what is asked of a subscription's terms on every
    usage event (which charges route, which are measured apart, ...)."""
    answers: dict[int, tuple[Mapping[str, Any], T]] = {}

    @wraps(fact)
    def answer(value: Mapping[str, Any]) -> T:
        if type(value) is not FrozenDict:
            return fact(value)
        known = answers.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        result = fact(value)
        if len(answers) >= LIMIT:
            answers.clear()
        answers[id(value)] = (value, result)  # held, so that its id is not reused meanwhile
        return result

    return answer
