"""Give every reader its own copy of a constant that the exporter shared only by accident.

Exporters deduplicate equal tensors: every zero bias of one width becomes one initializer
read by many Convs, and one shape vector serves many Reshapes. Pruning slices or rewrites a
tensor for one reader, so such sharing would couple unrelated channels (or break the other
readers). A shared initializer is copied per reader when it is a small integer vector (a
shape constant) or when all its elements are equal (a value no one meant to share); any
other shared tensor (tied embeddings, shared layers) stays shared and couples its readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

# Only tensors up to this many elements are read to test whether they are accidental copies.
MAX_UNTIE_ELEMENTS = 1 << 16
MAX_SHAPE_VECTOR = 64


@dataclass
class UntieRecord:
    """What the pass did: tensor name -> names of the copies it made."""

    copies: dict[str, list[str]] = field(default_factory=dict)


def _accidental(value: ir.Value) -> bool:
    tensor = value.const_value
    if tensor is None or tensor.size > MAX_UNTIE_ELEMENTS:
        return False
    array = tensor.numpy()
    if array.dtype.kind in "iu" and array.size <= MAX_SHAPE_VECTOR:
        return True
    if array.size <= 1 or array.dtype.kind not in "fiub":
        return array.size <= 1
    flat = array.reshape(-1)
    return bool(np.all(flat == flat[0]))


class UntieSharedConstantsPass(InPlacePass):
    """Copy accidentally shared initializers so each reading node has its own."""

    def __init__(self, record: UntieRecord | None = None) -> None:
        super().__init__()
        self.record = record if record is not None else UntieRecord()

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        modified = False
        interface = {v.name for v in (*graph.inputs, *graph.outputs)}
        for name, value in list(graph.initializers.items()):
            readers = {id(node): node for node, _ in value.uses()}
            if len(readers) < 2 or name in interface or not _accidental(value):
                continue
            array = value.const_value.numpy()
            keep: ir.Node | None = None
            for node, index in list(value.uses()):
                if node.graph is not graph:
                    continue
                if keep is None or node is keep:
                    keep = node
                    continue
                copy_name = f"{name}__{node.name or 'node'}_{index}"
                copy = ir.Value(
                    name=copy_name,
                    shape=value.shape,
                    type=value.type,
                    const_value=ir.Tensor(array.copy(), name=copy_name),
                )
                graph.register_initializer(copy)
                node.replace_input_with(index, copy)
                self.record.copies.setdefault(name, []).append(copy_name)
                modified = True
        return PassResult(model, modified)
