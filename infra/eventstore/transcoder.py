"""The event store's transcoder: eventsourcing's JSON format (same `{"_type_", "_data_"}`
wrappers, same transcodings) written and read with orjson instead of the standard `json`
module, whose pure-Python encoder was half the cost of saving an event.

Stored bytes stay readable by the library's own JSONTranscoder and the other way round; the
tests check both directions. One difference: orjson writes a `UUID` natively as a plain string
(there is no option to hand it to the transcodings), so it would read back as `str`. Identifiers
are text in this engine and no event or snapshot holds a UUID.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder, TranscodingNotRegisteredError

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
_WRAPPER = b'"_type_"'


class OrjsonTranscoder(JSONTranscoder):
    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(obj, default=self._encode_default, option=_OPTIONS)
        except orjson.JSONEncodeError as e:
            if isinstance(e.__cause__, TranscodingNotRegisteredError):
                raise e.__cause__ from None
            raise

    def _encode_default(self, obj: Any) -> Any:
        if type(obj) is datetime:  # every event's timestamp: skip the library's dispatch
            return {"_type_": "datetime_iso", "_data_": obj.isoformat()}
        return self._encode_obj(obj)

    def decode(self, data: bytes) -> Any:
        value = orjson.loads(data)
        wrappers = data.count(_WRAPPER)
        if not wrappers:  # nothing to revive: most usage events
            return value
        if type(value) is dict and not _is_wrapper(value):
            self._revive_shallowest_first(value, wrappers)
            return value
        return self._revive(value)

    def _revive_shallowest_first(self, root: dict[str, Any], wrappers: int) -> None:
        """Replace the wrapped values in place, the shallowest first, and stop once as many
        have been revived as the bytes hold `"_type_"` keys. That count is an upper bound (a
        plain dict may use the key too; then the walk just goes on to the end). Events keep
        their datetimes at the top level, so their big nested terms are mostly never walked:
        this was two thirds of the cost of loading a subscription."""
        found = 0
        pending: list[Any] = [root]
        for container in pending:
            items = container.items() if type(container) is dict else enumerate(container)
            for key, value in items:
                kind = type(value)
                if kind is dict:
                    if _is_wrapper(value):
                        data = value["_data_"]
                        if value["_type_"] == "datetime_iso" and type(data) is str:
                            container[key] = datetime.fromisoformat(data)  # the usual case
                            found += 1
                        else:
                            found += _count_wrappers(value)
                            container[key] = self._revive(value)
                    else:
                        pending.append(value)
                elif kind is list:
                    pending.append(value)
            if found >= wrappers:
                return

    def _revive(self, value: Any) -> Any:
        if type(value) is dict:
            if _is_wrapper(value):
                return self._decode_obj({"_type_": value["_type_"],
                                         "_data_": self._revive(value["_data_"])})
            return {k: self._revive(v) if type(v) in (dict, list) else v
                    for k, v in value.items()}
        if type(value) is list:
            return [self._revive(v) if type(v) in (dict, list) else v for v in value]
        return value


def _is_wrapper(value: dict[str, Any]) -> bool:
    return len(value) == 2 and "_type_" in value and "_data_" in value


def _count_wrappers(value: Any) -> int:
    if type(value) is dict:
        return _is_wrapper(value) + sum(_count_wrappers(v) for v in value.values())
    if type(value) is list:
        return sum(_count_wrappers(v) for v in value)
    return 0
