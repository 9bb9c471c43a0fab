"""Symbolic shapes from onnxruntime's shape inference, where ONNX's own leaves gaps.

ONNX names every size it cannot relate to the model inputs ``unk__N`` afresh, so the two sides
of a Reshape such as (B, S, 12, 64) -> (B, S, 768) share no symbol and cannot be aligned.
onnxruntime's symbolic shape inference evaluates Shape -> Gather -> Concat chains with sympy
and gives one run-time size one name everywhere (``batch``, ``batch*sequence``). Its shapes
replace those that ONNX left unknown; shapes ONNX knew are kept. Large float initializers are
declared as graph inputs for the run, so their data is neither copied nor read.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import onnx
import onnx_ir as ir
from onnx import TensorProto

from onnxprune.graph_values import all_values, dim_value
from onnxprune.skeleton import skeleton, weightless

#: Initializers with more elements than this are passed to the inference as declared inputs.
_INLINE_LIMIT = 4096

Shape = list[int | str | None]


@contextlib.contextmanager
def _silenced(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _unknown(dim: int | str | None, declared: frozenset[str] = frozenset()) -> bool:
    """No size, or a name ONNX inference made up (``unk__N``) that no graph input declares."""
    if dim is None:
        return True
    return isinstance(dim, str) and (not dim or (dim.startswith("unk__") and dim not in declared))


def _proto_types(proto: onnx.ModelProto) -> dict[str, int]:
    return {v.name: v.type.tensor_type.elem_type for v in (*proto.graph.value_info, *proto.graph.output)
            if v.type.tensor_type.elem_type}  # fmt: skip


def _proto_shapes(proto: onnx.ModelProto) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {}
    for value in (*proto.graph.value_info, *proto.graph.output):
        t = value.type.tensor_type
        if t.HasField("shape"):
            shapes[value.name] = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in t.shape.dim
            ]
    return shapes


def _large(init: onnx.TensorProto) -> bool:
    floating = init.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE,
                                  TensorProto.BFLOAT16)  # fmt: skip
    count = 1
    for d in init.dims:
        count *= d
    return init.data_location == TensorProto.EXTERNAL or (floating and count > _INLINE_LIMIT)


def infer_symbolic_shapes(
    proto: onnx.ModelProto, types: dict[str, int] | None = None
) -> dict[str, Shape] | None:
    """Value name -> shape from onnxruntime's symbolic inference; None when it cannot run.
    ``types``, when given, receives the element types it inferred."""
    symbolic_shape_infer = _symbolic_shape_infer()
    if symbolic_shape_infer is None:
        return None
    bare = weightless(proto, _large)
    try:
        with _silenced("onnxruntime"), contextlib.redirect_stdout(io.StringIO()):
            inferred = _run(_size_products(symbolic_shape_infer), bare)
    except Exception:  # noqa: BLE001 - an op it does not know; ONNX's shapes stand
        return None
    if inferred is None:
        return None
    if types is not None:
        types.update(_proto_types(inferred))
    return _proto_shapes(inferred)


@functools.cache
def _symbolic_shape_infer() -> ModuleType | None:
    """onnxruntime's ``tools/symbolic_shape_infer.py`` (numpy, onnx and sympy only), loaded from
    its file: importing it as ``onnxruntime.tools.symbolic_shape_infer`` first runs that
    package's ``__init__``, which imports torch wherever torch is installed (1.4 s here).
    None where onnxruntime ships without it or sympy is missing."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "tools" / "symbolic_shape_infer.py"
    loaded = importlib.util.spec_from_file_location("onnxprune._ort_symbolic_shape_infer", path)
    if not path.is_file() or loaded is None or loaded.loader is None:
        return None
    module = importlib.util.module_from_spec(loaded)
    try:
        loaded.loader.exec_module(module)
    except ImportError:
        return None
    return module


def _size_products(module):
    """onnxruntime's inference, also following ``ReduceProd`` of a whole size vector kept as
    a 1-vector (tf2onnx's einsum lowering); onnxruntime follows only keepdims=0, axes=[0]."""

    class Inference(module.SymbolicShapeInference):
        def _infer_ReduceProd(self, node):  # noqa: N802
            super()._infer_ReduceProd(node)
            axes = module.get_attribute(node, "axes")
            if (module.get_attribute(node, "keepdims", 1) == 1 and axes in (None, [0])
                    and len(node.input) == 1):  # fmt: skip
                data = self._get_int_or_float_values(node)[0]
                if isinstance(data, list) and data:
                    self.sympy_data_[node.output[0]] = [module.sympy_reduce_product(data)]

    return Inference


def _run(inference_class, proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """``SymbolicShapeInference.infer_shapes`` without its side effect: where inference is
    incomplete it writes ``sym_shape_infer_temp.onnx`` into the working directory and raises;
    here the shapes it did infer are kept and nothing is written."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 7:
        return None
    inference = inference_class(2**31 - 1, True, False, 0)
    inference._preprocess(proto)
    while inference.run_:
        inference._infer_impl()
    inference._update_output_from_vi()
    return inference.out_mp_


def complete_shapes(model: ir.Model) -> int:
    """Replace shapes with unknown dims by onnxruntime's symbolic ones; returns how many."""
    values = all_values(model.graph)
    declared = frozenset(str(d.value) for v in model.graph.inputs if v.shape is not None
                         for d in v.shape if not isinstance(d, int) and d.value)  # fmt: skip
    if not any(v.shape is None or any(_unknown(dim_value(d), declared) for d in v.shape)
               for v in values.values()):  # fmt: skip
        return 0
    types: dict[str, int] = {}
    shapes = infer_symbolic_shapes(skeleton(model, as_inputs=True), types)
    if not shapes:
        return 0
    changed = 0
    for name, elem_type in types.items():
        value = values.get(name)
        if value is not None and value.type is None:
            value.type = ir.TensorType(ir.DataType(elem_type))
    for name, shape in shapes.items():
        value = values.get(name)
        if value is None or value.const_value is not None or any(
            _unknown(d, declared) for d in shape
        ):
            continue
        old = None if value.shape is None else [dim_value(d) for d in value.shape]
        if old is not None and (
            len(old) != len(shape) or not any(_unknown(d, declared) for d in old)
        ):
            continue
        if old is not None and any(
            isinstance(a, int) and a != b for a, b in zip(old, shape, strict=True)
        ):
            continue  # disagreement on a static size: keep ONNX's
        value.shape = ir.Shape(shape)
        changed += 1
    return changed
