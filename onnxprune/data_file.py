"""Writing a model with its weights in one external data file, a tensor per thread at a time.

Rules: the initializers of every graph go into the data file in order, each of more than
``ALIGN_OVER`` bytes at an offset that is a multiple of ``ALIGN`` (the rest packed), and the
ONNX file gets the graph with each of them referring to its bytes there (initializers of at
most ``INLINE`` bytes held in memory stay in the proto; one read from a file never does, as
its old reference could name the new file). How a tensor's bytes get there depends on where
they are:

- a tensor read from an external data file: copied file to file in the kernel
  (``copy_file_range``; a bounded read and write where the file systems refuse it); no byte
  enters the process;
- a slice of one (``weights.Sliced``): the source read with ``preadv`` into a buffer, taken at
  the kept positions into a second buffer, both reused for every tensor (a memory mapping
  would fault each page in, and a fresh array per tensor each page out: 3x slower here);
- any other tensor: written from its array.

Two threads write, each at offsets laid out beforehand (``pwrite``, in pieces of
``wire.WRITE_PIECE``): at most two tensors' bytes per thread are held at once, and the proto
never holds a weight.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxprune.weights import Sliced, mapped, take_kept
from onnxprune.wire import WRITE_PIECE

#: Tensors of more than this many bytes start at a multiple of ``ALIGN`` in the data file.
ALIGN_OVER = 2**20
ALIGN = 4096
#: Tensors of at most this many bytes stay in the proto.
INLINE = 1024
#: Threads writing tensors (a tensor's read and slice overlap another's write).
WRITERS = 2


class _Buffers(threading.local):
    """Two byte buffers per thread (source, result), grown to the largest tensor seen and then
    reused."""

    def __init__(self) -> None:
        self._arrays = [np.empty(0, np.uint8), np.empty(0, np.uint8)]

    def get(self, which: int, nbytes: int) -> np.ndarray:
        if self._arrays[which].size < nbytes:
            self._arrays[which] = np.empty(0, np.uint8)  # the old one goes first
            self._arrays[which] = np.empty(nbytes, np.uint8)
        return self._arrays[which][:nbytes]


def _typed(buffer: np.ndarray, tensor: ir.TensorProtocol) -> np.ndarray | None:
    """``buffer`` viewed as the tensor's array, where its type has a numpy type of whole
    bytes; else None."""
    try:
        dtype = tensor.dtype.numpy()
    except (TypeError, ValueError):
        return None
    if dtype.itemsize * 8 != tensor.dtype.bitwidth:
        return None
    return buffer.view(dtype).reshape(tuple(tensor.shape.numpy()))


def _pread(fd: int, buffer: memoryview, offset: int, what: str) -> None:
    done = 0
    while done < len(buffer):
        got = os.preadv(fd, [buffer[done:]], offset + done)
        if got == 0:
            raise ValueError(f"the external data of {what} ends early")
        done += got


def _pwrite(fd: int, data: memoryview | bytes, offset: int) -> None:
    data = memoryview(data).cast("B")
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:done + WRITE_PIECE], offset + done)


def _copy(tensor: ir.ExternalTensor, fd: int, offset: int, what: str) -> None:
    """The external tensor's bytes copied into ``fd`` at ``offset``: in the kernel where the
    file systems allow, else through a bounded buffer."""
    length = tensor.nbytes
    source = os.open(tensor.path, os.O_RDONLY)
    try:
        start = tensor.offset or 0
        done = 0
        with contextlib.suppress(OSError):  # another file system, or no kernel copy here
            while done < length:
                got = os.copy_file_range(source, fd, length - done, start + done, offset + done)
                if got == 0:
                    break
                done += got
        while done < length:
            chunk = os.pread(source, min(2**26, length - done), start + done)
            if not chunk:
                raise ValueError(f"the external data of {what} ends early")
            _pwrite(fd, chunk, offset + done)
            done += len(chunk)
    finally:
        os.close(source)


def _sliced(tensor: Sliced, fd: int, offset: int, buffers: _Buffers, what: str) -> bool:
    """Write a slice of an external tensor through the reused buffers; False where the
    source is not such a tensor (the caller writes the slice from its array)."""
    source = tensor.source
    if not isinstance(source, ir.ExternalTensor) or not tensor.axes:
        return False
    array = _typed(buffers.get(0, source.nbytes), source)
    out = _typed(buffers.get(1, tensor.nbytes), tensor)
    if array is None or out is None:
        return False
    source_fd = os.open(source.path, os.O_RDONLY)
    try:
        _pread(source_fd, memoryview(array.reshape(-1).view(np.uint8)), source.offset or 0, what)
    finally:
        os.close(source_fd)
    *first, (axis, kept) = sorted(tensor.axes.items())
    array = take_kept(array, dict(first))
    np.take(array, kept, axis=axis, out=out, mode="clip")  # "raise" copies via a temporary
    _pwrite(fd, out.reshape(-1).view(np.uint8), offset)
    return True


def _write_at(tensor: ir.TensorProtocol, fd: int, offset: int, buffers: _Buffers,
              what: str) -> None:  # fmt: skip
    """Write ``tensor``'s bytes at ``offset`` of ``fd`` (module docstring: by where they are)."""
    if isinstance(tensor, Sliced) and _sliced(tensor, fd, offset, buffers, what):
        return
    if isinstance(tensor, ir.ExternalTensor):
        _copy(tensor, fd, offset, what)
        return
    array = tensor.numpy() if tensor.dtype.bitwidth >= 8 else None
    if array is not None and array.flags.c_contiguous and array.dtype.isnative:
        data: memoryview | bytes = array.reshape(-1).view(np.uint8)
    else:
        data = tensor.tobytes()
    if len(memoryview(data).cast("B")) != tensor.nbytes:
        raise ValueError(f"{what} gives {len(memoryview(data).cast('B'))} bytes for its "
                         f"{tensor.nbytes}")  # fmt: skip
    _pwrite(fd, data, offset)


def _layout(model: ir.Model) -> list[tuple[ir.Value, ir.TensorProtocol, int]]:
    """Each initializer written to the data file, with its offset there."""
    out = []
    end = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is None or tensor.dtype == ir.DataType.STRING or (
                    tensor.nbytes <= INLINE and not mapped(tensor)):  # fmt: skip
                continue  # strings have no raw bytes: they stay in the proto
            if tensor.nbytes > ALIGN_OVER and end % ALIGN:
                end += ALIGN - end % ALIGN
            out.append((value, tensor, end))
            end += tensor.nbytes
    return out


@contextlib.contextmanager
def _pointing(model: ir.Model, data: Path) -> Iterator[None]:
    """Write the initializers' bytes into ``data`` (``WRITERS`` threads, each reading, slicing
    and writing whole tensors at the offsets laid out first) and, until exit, let each
    initializer written there refer to its bytes."""
    layout = _layout(model)
    buffers = _Buffers()
    fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        if layout:
            last = layout[-1]
            os.ftruncate(fd, last[2] + last[1].nbytes)
        with ThreadPoolExecutor(WRITERS) as pool:
            list(pool.map(lambda item: _write_at(item[1], fd, item[2], buffers,
                                                 f"initializer '{item[0].name}'"), layout))  # fmt: skip
    finally:
        os.close(fd)
    try:
        for value, tensor, offset in layout:
            value.const_value = ir.ExternalTensor(
                data.name, offset, tensor.nbytes, tensor.dtype, shape=tensor.shape,
                name=value.name, base_dir=data.parent)  # fmt: skip
        yield
    finally:
        for value, tensor, _ in layout:
            value.const_value = tensor


def write(model: ir.Model, path: str | os.PathLike, data_name: str) -> None:
    """Write ``model`` to ``path`` with its weights in ``data_name`` beside it (module
    docstring); ``model`` is left as it was."""
    path = Path(path)
    with _pointing(model, path.parent / data_name):
        proto = ir.to_proto(model)
    with open(path, "wb") as file:
        file.write(proto.SerializeToString())
