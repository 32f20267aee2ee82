"""The exact-type state codec: msgpack with extension types, no pickle.

A value comes back with the type it went in with (``type(x) is T``) and an equal
value, or it is refused at encode time with :class:`UnsupportedTypeError` naming
where it sits. Supported, exact types only (subclasses are refused):

* ``None``, ``bool``, ``int`` (any size), ``float`` (nan, inf, -0.0), ``str``
  (valid UTF-8), ``bytes``, ``bytearray``;
* ``list``, ``tuple``, ``dict`` (any supported hashable key), ``set``, ``frozenset``;
* ``datetime.datetime`` / ``datetime.time`` (naive, or with ``datetime.timezone``
  or a keyed ``zoneinfo.ZoneInfo``, not one read by ``ZoneInfo.from_file`` even with a
  key; ``fold`` kept), ``datetime.date``,
  ``datetime.timedelta``, ``decimal.Decimal`` (NaN, sNaN, -0, exponents), ``uuid.UUID``.

Containers may nest at most :data:`MAX_DEPTH` levels; cycles are refused. A NaN
(float or Decimal) anywhere inside a dict key or a set member is refused: it could
not be looked up after a round trip.

Wire form: plain msgpack for None/bool/int64/float/str/bytes/list/dict; a tuple,
set or frozenset is an array whose first item is an empty marker extension
(``[ext 2, *items]``), so containers never nest msgpack calls (each nested C
unpack puts ~40 KB on the C stack: nested extension payloads segfault at ~180
levels); every other type is one leaf extension (codes in tags.py).

Encoding (encode.py) takes one of two paths: a fast one for states of the types msgpack
packs exactly in C (plain.py: one breadth-first scan, then ormsgpack or msgpack), a careful
one for every other (careful.py: one pass that checks and prepares, then msgpack with the
leaf encoders of tags.py); only when it fails does a slow walk (problems.py) name the value
and its path. A value encoded once (spliced.py; ``encoded``, ``EncodedMap``, ``EncodedList``)
is joined verbatim into a top-level dict's encoding. Decoding (decode.py) is msgpack's C
unpacker with the leaf decoders of tags.py.
"""

from __future__ import annotations

from .decode import UNPACK_MAX_DEPTH, decode_state
from .encode import EncodedList, EncodedMap, encode_state, encode_state_buffer, encoded, exactly_equal
from .spliced import Encoded
from .tags import CODEC_MSGPACK, MAX_DEPTH

__all__ = [
    "CODEC_MSGPACK", "MAX_DEPTH", "UNPACK_MAX_DEPTH", "encode_state", "encode_state_buffer", "decode_state",
    "Encoded", "EncodedList", "EncodedMap", "encoded", "exactly_equal"]
