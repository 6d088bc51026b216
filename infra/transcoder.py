"""The event store's transcoder: eventsourcing's JSON format (same `{"_type_", "_data_"}`
wrappers, same transcodings) written and read with orjson instead of the standard `json`
module, whose pure-Python encoder was half the cost of saving an event.

Stored bytes stay readable by the library's own JSONTranscoder and the other way round; the
tests check both directions. One difference: orjson writes a `UUID` natively as a plain string
(there is no option to hand it to the transcodings), so it would read back as `str`. Identifiers
are text in this engine and no event or snapshot holds a UUID.
"""

from __future__ import annotations

from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder, TranscodingNotRegisteredError

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
_WRAPPER = b'"_type_"'


class OrjsonTranscoder(JSONTranscoder):
    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(obj, default=self._encode_obj, option=_OPTIONS)
        except orjson.JSONEncodeError as e:
            if isinstance(e.__cause__, TranscodingNotRegisteredError):
                raise e.__cause__ from None
            raise

    def decode(self, data: bytes) -> Any:
        value = orjson.loads(data)
        if _WRAPPER not in data:  # nothing to revive: most usage events
            return value
        return self._revive(value)

    def _revive(self, value: Any) -> Any:
        if type(value) is dict:
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                return self._decode_obj({"_type_": value["_type_"],
                                         "_data_": self._revive(value["_data_"])})
            return {k: self._revive(v) if type(v) in (dict, list) else v
                    for k, v in value.items()}
        if type(value) is list:
            return [self._revive(v) if type(v) in (dict, list) else v for v in value]
        return value
