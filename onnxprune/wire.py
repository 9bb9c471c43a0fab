"""Reading and writing ONNX files in protobuf's wire format around their weights.

Rule: a file is memory-mapped and walked field by field: ``ModelProto.graph`` (field 7) ->
``GraphProto.initializer`` (field 5) -> ``TensorProto`` (``data_type`` 2, ``raw_data`` 9,
``external_data`` 13, each entry a ``StringStringEntryProto``: key 1, value 2); every other
field is skipped by its length. A parse copies every weight into the proto, and reading it as
an array copies it again (0.5 s each for vgg11_bn's 507 MB); serializing copies each weight
into the proto and the proto into bytes:

- ``external_data_locations``: the data files a model reads, no weight byte touched;
- ``read_without_weights``, ``read_weights``: the model's bytes with the ``raw_data`` of each
  large main-graph initializer left out, and those weights' bytes read once from the file
  into arrays;
- ``write_model``: the model serialized without its large main-graph initializers' data,
  which is written to the file straight from the arrays, field by field.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import onnx_ir as ir

from onnxprune import skeleton

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_EXTERNAL_DATA = 7, 5, 13
_TENSOR_DATA_TYPE, _TENSOR_RAW_DATA = 2, 9

#: Little-endian numpy types of the ``TensorProto.DataType`` values read as arrays.
_DTYPES = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 9: "?",
           10: "<f2", 11: "<f8", 12: "<u4", 13: "<u8"}  # fmt: skip
#: The same types as onnx-ir data types: the plain numpy ones (onnxruntime takes arrays of
#: them as OrtValues, too).
PLAIN_TYPES = frozenset(ir.DataType(k) for k in _DTYPES)


#: Bytes per write call: the page cache takes a large buffer written at once at a third of
#: the speed of the same bytes in pieces of this size (3.3 GB here: 3.5 s in 4 MiB writes,
#: 1.1 s in 1 MiB, 0.7 s in 256 KiB; medians of five runs).
WRITE_PIECE = 2**18


def write_pieces(file: BinaryIO, data: memoryview | bytes) -> None:
    """``file.write(data)`` in pieces of at most ``WRITE_PIECE`` bytes."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), WRITE_PIECE):
        file.write(view[start:start + WRITE_PIECE])


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _spans(buf: mmap.mmap | bytes, start: int, end: int
           ) -> Iterator[tuple[int, int, int, int, int]]:  # fmt: skip
    """(field number, wire type, field start, payload start, end) of every field of the
    message in ``buf[start:end]``; a varint's payload is its value's bytes."""
    pos = start
    while pos < end:
        first = pos
        key, pos = _varint(buf, pos, end)
        wire = key & 7
        if wire == _VARINT:
            payload = pos
            _, pos = _varint(buf, pos, end)
        elif wire in (_FIXED64, _FIXED32):
            payload, pos = pos, pos + (8 if wire == _FIXED64 else 4)
        elif wire == _LEN:
            size, payload = _varint(buf, pos, end)
            pos = payload + size
        else:
            raise WireError(f"unsupported wire type {wire}")
        if pos > end:
            raise WireError("a field runs past its message")
        yield key >> 3, wire, first, payload, pos


def _fields(buf: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of every length-delimited field's payload."""
    for field, wire, _, payload, stop in _spans(buf, start, end):
        if wire == _LEN:
            yield field, payload, stop


def external_data_locations(path: str | os.PathLike) -> set[str]:
    """The ``location`` of every main-graph initializer stored as external data in the ONNX
    file at ``path``.

    Raises:
        WireError: the file is not a well-formed protobuf message.
    """
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return set()
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            locations = set()
            for field, start, end in _fields(buf, 0, len(buf)):
                if field != _MODEL_GRAPH:
                    continue
                for g_field, t_start, t_end in _fields(buf, start, end):
                    if g_field != _GRAPH_INITIALIZER:
                        continue
                    for t_field, e_start, e_end in _fields(buf, t_start, t_end):
                        if t_field == _TENSOR_EXTERNAL_DATA:
                            entry = {k: bytes(buf[s:e]) for k, s, e in _fields(buf, e_start, e_end)}
                            if entry.get(1) == b"location" and 2 in entry:
                                locations.add(entry[2].decode("utf-8", "replace"))
            return locations


def numpy_dtype(data_type: int) -> np.dtype:
    """The little-endian numpy type of a ``TensorProto.DataType`` that
    ``read_weights`` reads."""
    return np.dtype(_DTYPES[data_type])


def _length_prefixed(field: int, payload: bytes) -> bytes:
    return _encode_varint(field << 3 | _LEN) + _encode_varint(len(payload)) + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@dataclass
class Split:
    """A model file's bytes without the raw data of some main-graph initializers, and where
    each of those lies in the file (by index among the initializers: offset, size), for
    ``read_weights``."""

    model: bytes
    spans: dict[int, tuple[int, int]]


def read_without_weights(path: str | os.PathLike, min_bytes: int) -> Split:
    """The file at ``path`` with the ``raw_data`` of every main-graph initializer of more than
    ``min_bytes`` bytes and of a plain numeric type left out, and where that data lies. The
    walk reads the fields through a mapping that never touches the weights' pages.

    Raises:
        WireError: the file is not a well-formed protobuf message.
    """
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return Split(b"", {})
        spans: dict[int, tuple[int, int]] = {}
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            parts = []
            for field, wire, first, payload, end in _spans(buf, 0, len(buf)):
                if field == _MODEL_GRAPH and wire == _LEN:
                    parts.append(_length_prefixed(field, _graph(buf, payload, end, min_bytes,
                                                                spans)))  # fmt: skip
                else:
                    parts.append(buf[first:end])
        return Split(b"".join(parts), spans)


def read_weights(path: str | os.PathLike, spans: dict[int, tuple[int, int]]
                 ) -> dict[int, np.ndarray]:  # fmt: skip
    """The raw bytes at each (offset, size) of ``spans``, each read from the file into an
    array of its own (aligned, one copy, no mapping whose pages would count twice in the
    process's memory).

    Raises:
        WireError: the file ends inside one of them.
    """
    arrays = {}
    with open(path, "rb") as file:
        for index, (offset, size) in spans.items():
            array = np.empty(size, np.uint8)
            file.seek(offset)
            if file.readinto(memoryview(array)) != size:
                raise WireError("the file ends inside a weight")
            arrays[index] = array
    return arrays


def _graph(buf: mmap.mmap, start: int, end: int, min_bytes: int,
           spans: dict[int, tuple[int, int]]) -> bytes:  # fmt: skip
    parts = []
    index = 0
    for field, wire, first, payload, stop in _spans(buf, start, end):
        if field != _GRAPH_INITIALIZER or wire != _LEN:
            parts.append(buf[first:stop])
            continue
        kept, raw = _tensor(buf, payload, stop, min_bytes)
        if raw is None:
            parts.append(buf[first:stop])
        else:
            parts.append(_length_prefixed(field, kept))
            spans[index] = raw
        index += 1
    return b"".join(parts)


def _tensor(buf: mmap.mmap, start: int, end: int,
            min_bytes: int) -> tuple[bytes, tuple[int, int] | None]:  # fmt: skip
    """The tensor's bytes without its raw data and where that data lies (offset, size), when
    it is large and of a type in ``_DTYPES``; else (b"", None)."""
    spans = list(_spans(buf, start, end))
    data_type = raw = None
    for field, wire, _, payload, stop in spans:
        if field == _TENSOR_DATA_TYPE and wire == _VARINT:
            data_type = _varint(buf, payload, stop)[0]
        elif field == _TENSOR_RAW_DATA and wire == _LEN:
            raw = (payload, stop)
    if raw is None or data_type not in _DTYPES or raw[1] - raw[0] <= min_bytes:
        return b"", None
    kept = b"".join(buf[first:stop] for field, _, first, _, stop in spans
                    if field != _TENSOR_RAW_DATA)  # fmt: skip
    return kept, (raw[0], raw[1] - raw[0])


def write_model(model: ir.Model, path: str | os.PathLike, min_bytes: int) -> None:
    """Write ``model`` to ``path`` as one ONNX file (under the protobuf limit): the proto
    without the data of main-graph initializers of more than ``min_bytes`` bytes, then each
    of those as an ``initializer`` field whose ``raw_data`` comes from the tensor's array
    itself (no copy for a contiguous array of a type in ``_DTYPES``; ``tobytes`` otherwise).
    Parsers read repeated fields in any order, so the file is the model ``ir.save`` writes,
    its large initializers last; one large tensor is read at a time."""
    proto, large = skeleton.split_weights(  # strings are not raw data: they stay in the proto
        model, lambda t: t.dtype != ir.DataType.STRING and t.nbytes > min_bytes)
    names = {name for name, _ in large}
    headers = {}
    kept = []
    for tensor in proto.graph.initializer:
        if tensor.name in names:
            tensor.ClearField("external_data")
            tensor.ClearField("data_location")
            headers[tensor.name] = tensor.SerializeToString()
        else:
            kept.append(tensor)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    graph = proto.graph.SerializeToString()
    proto.ClearField("graph")
    heads = []
    for name, tensor in large:  # sizes from the shapes: each tensor is read when written
        raw_key = _encode_varint(_TENSOR_RAW_DATA << 3 | _LEN) + _encode_varint(tensor.nbytes)
        size = len(headers[name]) + len(raw_key) + tensor.nbytes
        prefix = _encode_varint(_GRAPH_INITIALIZER << 3 | _LEN) + _encode_varint(size)
        heads.append(prefix + headers[name] + raw_key)
    graph_size = len(graph) + sum(len(h) + t.nbytes for h, (_, t) in zip(heads, large,
                                                                        strict=True))  # fmt: skip
    with open(path, "wb") as file:
        file.write(proto.SerializeToString())
        file.write(_encode_varint(_MODEL_GRAPH << 3 | _LEN) + _encode_varint(graph_size))
        file.write(graph)
        for head, (name, tensor) in zip(heads, large, strict=True):
            data = _raw(tensor)
            if len(data) != tensor.nbytes:
                raise ValueError(f"initializer '{name}' gives {len(data)} bytes for its "
                                 f"{tensor.nbytes}")  # fmt: skip
            file.write(head)
            write_pieces(file, data)
            del data


def _raw(tensor: ir.TensorProtocol) -> memoryview | bytes:
    """The tensor's ``raw_data`` bytes: a view of its array where that array is them."""
    if tensor.dtype.value in _DTYPES:
        array = tensor.numpy()
        if array.dtype == numpy_dtype(tensor.dtype.value) and array.flags.c_contiguous:
            return memoryview(array).cast("B") if array.size else b""
    return tensor.tobytes()
