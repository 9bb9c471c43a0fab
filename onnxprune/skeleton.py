"""A model's graph as an ``onnx.ModelProto`` without its weight data.

Rule: initializers of more than ``SMALL`` elements (whether in memory, memory-mapped external
data or computed on demand) are written as data-less references (dims and type only, external
location ``STUB``), or, with ``as_inputs``, as typed graph inputs; initializers of at most
``SMALL`` elements are written with their values (read from external data if they live
there), so shape inference can still read shape constants. No weight is read or copied: the
proto of a 4 GB model is a few hundred kilobytes. Shape inference, cost counting and
``onnx.checker`` (``as_inputs``) run on it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import onnx
import onnx_ir as ir

#: Initializers up to this many elements keep their values in the skeleton.
SMALL = 4096
#: The external-data location written for a data-less initializer.
STUB = "onnxprune-no-data"


@contextlib.contextmanager
def _swapped(model: ir.Model, small: int,
             select: Callable[[ir.TensorProtocol], bool] | None = None) -> Iterator[list[ir.Value]]:  # fmt: skip
    """Temporarily replace each main-graph initializer's tensor by a stub (large, or those
    ``select`` selects) or an in-memory copy (small external); yields the values made stubs;
    restores on exit."""
    saved: list[tuple[ir.Value, ir.TensorProtocol]] = []
    stubs = []
    try:
        for value in model.graph.initializers.values():
            tensor = value.const_value
            if tensor is None:
                continue
            if select(tensor) if select is not None else tensor.size > small:
                stub = ir.ExternalTensor(STUB, 0, tensor.nbytes, tensor.dtype,
                                         shape=tensor.shape, name=value.name)  # fmt: skip
                saved.append((value, tensor))
                value.const_value = stub
                stubs.append(value)
            elif isinstance(tensor, ir.ExternalTensor | ir.LazyTensor):
                saved.append((value, tensor))
                value.const_value = ir.Tensor(tensor.numpy().copy(), name=value.name)
                if isinstance(tensor, ir.ExternalTensor):
                    tensor.release()
        yield stubs
    finally:
        for value, tensor in saved:
            value.const_value = tensor


def skeleton(model: ir.Model, *, as_inputs: bool = False, small: int = SMALL) -> onnx.ModelProto:
    """``model`` as a proto without the data of initializers over ``small`` elements (module
    docstring); ``model`` is left as it was."""
    with _swapped(model, small):
        proto = ir.to_proto(model)
    return stubs_as_inputs(proto) if as_inputs else proto


def stubs_as_inputs(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A skeleton's data-less initializers (location ``STUB``) as typed graph inputs
    (``weightless``): what ``onnx.checker`` and shape inference take."""
    return weightless(proto, _is_stub)


def left_out(tensor: onnx.TensorProto) -> bool:
    """Whether a skeleton leaves ``tensor`` (a proto's) out: more than ``SMALL`` elements, or
    data in another file."""
    return math.prod(tensor.dims) > SMALL or tensor.data_location == onnx.TensorProto.EXTERNAL


def _is_stub(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL and any(
        e.key == "location" and e.value == STUB for e in tensor.external_data)


def split_weights(model: ir.Model, stub: Callable[[ir.TensorProtocol], bool],
                  ) -> tuple[onnx.ModelProto, list[tuple[str, ir.TensorProtocol]]]:  # fmt: skip
    """``model`` as a proto in which the main-graph initializers ``stub`` selects are data-less
    references, and those initializers' (name, tensor), for a runtime to take the data from
    the tensors themselves; ``model`` is left as it was."""
    tensors = [(name, value.const_value) for name, value in model.graph.initializers.items()
               if value.const_value is not None and stub(value.const_value)]  # fmt: skip
    with _swapped(model, 0, stub):
        proto = ir.to_proto(model)
    return proto, tensors


def weightless(proto: onnx.ModelProto,
               drop: Callable[[onnx.TensorProto], bool]) -> onnx.ModelProto:  # fmt: skip
    """A new proto with ``proto``'s graph, opsets and functions in which every initializer
    ``drop`` selects is a typed graph input instead (never copied); ``proto`` itself when
    ``drop`` selects none."""
    if not any(drop(t) for t in proto.graph.initializer):
        return proto
    bare = onnx.ModelProto()
    for name in ("ir_version", "producer_name", "domain", "model_version"):
        setattr(bare, name, getattr(proto, name))
    bare.opset_import.extend(proto.opset_import)
    bare.functions.extend(proto.functions)
    graph = bare.graph
    graph.name = proto.graph.name
    graph.node.extend(proto.graph.node)
    graph.input.extend(proto.graph.input)
    graph.output.extend(proto.graph.output)
    graph.value_info.extend(proto.graph.value_info)
    declared = {v.name for v in graph.input}
    for tensor in proto.graph.initializer:
        if not drop(tensor):
            graph.initializer.append(tensor)
        elif tensor.name not in declared:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                                  list(tensor.dims)))  # fmt: skip
    return bare


def graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph in it (If branches, Loop and Scan bodies), recursively."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from graphs(sub)


#: The domain ``checkable`` moves unregistered default-domain ops to.
UNREGISTERED = "onnxprune.unregistered"


def checkable(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with nodes of the default domain that this onnx has no schema for (onnxruntime
    adds some there: ``SimplifiedLayerNormalization``) moved to a custom domain, which
    ``onnx.checker`` skips, as it skips every custom op; the rest is checked in full. The
    proto is changed in place (pass a copy or a skeleton)."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    moved = False
    for graph in graphs(proto.graph):
        for node in graph.node:
            if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type, ""):
                node.domain = UNREGISTERED
                moved = True
    if moved and opset is not None:
        proto.opset_import.append(onnx.helper.make_opsetid(UNREGISTERED, 1))
    return proto
