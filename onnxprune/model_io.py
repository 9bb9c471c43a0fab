"""Loading any model source into onnx-ir, and writing models atomically.

Sources: a path, an ``onnx.ModelProto`` or an ``onnx_ir.Model``. External data is
memory-mapped by onnx-ir, so analysis never materialises weights it does not read. Loading
refuses what onnx-ir would silently repair (``check_structure``) and external data it must
not read. The input and its data files are never written to; output is staged in a private
folder in the destination folder and renamed into place (``save_model``), so a failure
leaves no half-written model behind.

A negative dimension in a declared shape (Paddle2ONNX writes ``-1`` for a dynamic batch)
becomes an unnamed symbolic dimension on load: ONNX defines dimension values as
non-negative, and every reader here takes an ``int`` dimension as a fixed size.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxprune import data_file, wire
from onnxprune.errors import ModelLoadError, UnsupportedModelError, UsageError
from onnxprune.shape_inference import infer_proto
from onnxprune.skeleton import SMALL, left_out, weightless
from onnxprune.weights import model_nbytes

ModelSource = str | os.PathLike | onnx.ModelProto | ir.Model

#: ``ir.Model.meta`` key of the weights a loaded file's initializers were read into, by name.
FILE_WEIGHTS = "onnxprune.file_weights"
#: ``ir.Model.meta`` key of ONNX shape inference (strict) of the proto a file was loaded from,
#: while the model is still that proto's graph: ``analysis.normalize`` reads its shapes back
#: instead of serializing a skeleton and inferring again.
LOADED_INFERENCE = "onnxprune.loaded_inference"

# Models whose serialized protobuf would exceed this are written with external data.
PROTOBUF_LIMIT = 2**31 - 1 - 64 * 2**20


def from_graphsurgeon(model: object) -> object:
    """An ``onnx_graphsurgeon.Graph`` (the graph TensorRT users edit) as the ``ModelProto`` it
    exports (its opset and weights included); anything else as given."""
    kind = type(model)
    if kind.__name__ == "Graph" and kind.__module__.startswith("onnx_graphsurgeon"):
        import onnx_graphsurgeon as gs

        return gs.export_onnx(model)
    return model


def load_model(source: ModelSource, base_dir: str | os.PathLike | None = None) -> ir.Model:
    """Return an onnx-ir model for ``source``; a given ``ir.Model`` is copied, never mutated.
    A ``ModelProto`` that still refers to external data reads it from ``base_dir`` (the folder
    the model file was in), under the same rules as a path."""
    if isinstance(source, ir.Model):
        model = source.clone()
        _dynamic_negative_dims(model)
        return model
    if isinstance(source, onnx.ModelProto):
        check_structure(source, "the model")
        external = any(t.data_location == onnx.TensorProto.EXTERNAL
                       for t in source.graph.initializer)  # fmt: skip
        if external and base_dir is None:
            raise UsageError(
                "the ModelProto refers to external data that was not loaded: pass base_dir= "
                "(the folder of the model file), load it with onnx.load(path), or pass the "
                "file's path instead"
            )
        model = ir.from_proto(source)
        if external:
            folder = Path(base_dir)
            for value in model.graph.initializers.values():
                tensor = value.const_value
                if isinstance(tensor, ir.ExternalTensor):
                    value.const_value = ir.ExternalTensor(
                        tensor.location, tensor.offset, tensor.length, tensor.dtype,
                        shape=tensor.shape, name=tensor.name, base_dir=folder)  # fmt: skip
            _check_external_data_readable(model, folder / "model.onnx")
        _dynamic_negative_dims(model)
        return model
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"model file '{path}' does not exist; check the path")
    if path.is_dir():
        raise ModelLoadError(f"'{path}' is a directory; pass the .onnx file inside it")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model file '{path}' is empty; re-export the model")
    try:  # parsed once, without its large weights: the structure check reads the same proto
        proto, arrays = _parsed(path)
        model = ir.from_proto(proto)
        ir.external_data.set_base_dir(model.graph, path.parent)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError, ... for bad bytes
        raise ModelLoadError(
            f"'{path}' is not a readable ONNX model ({type(exc).__name__}: {exc}); "
            "check that the file is complete (not truncated) and is an .onnx export"
        ) from exc
    if len(model.graph) == 0 and not model.graph.outputs:
        raise ModelLoadError(f"'{path}' holds no graph; it is not an ONNX model export")
    check_structure(proto, f"'{path}'", outputs=False)
    inferred = infer_proto(proto)  # strict: where it succeeds, the declared outputs agree
    if inferred is None:
        _check_declared_outputs(proto, f"'{path}'")
    _take_arrays(model, proto, arrays, path)  # first: a data-less proto tensor reads as zeros
    _own_tensor_data(model)
    _check_external_data_readable(model, path)
    if not _dynamic_negative_dims(model) and inferred is not None:
        model.meta[LOADED_INFERENCE] = inferred
    return model


def _parsed(path: Path) -> tuple[onnx.ModelProto, dict[int, object]]:
    """The model proto without the raw data of its main-graph initializers of more than
    ``SMALL`` elements of a plain numeric type, and those weights' raw bytes by initializer
    index (``wire``: each weight copied once, not three times); a file the wire walk cannot
    read is parsed whole, for protobuf to report."""
    try:
        split = wire.read_without_weights(path, min_bytes=8 * SMALL)
        arrays = wire.read_weights(path, split.spans)
    except wire.WireError:
        return onnx.load(str(path), load_external_data=False), {}
    proto = onnx.ModelProto()
    proto.ParseFromString(split.model)
    return proto, arrays


def file_weight(tensor: onnx.TensorProto, raw: object, path: Path) -> object:
    """The raw bytes ``wire.read_weights`` read for ``tensor`` as an array of its type and
    shape.

    Raises:
        ModelLoadError: the bytes do not fill the shape (a corrupt file).
    """
    shape, dtype = tuple(tensor.dims), wire.numpy_dtype(tensor.data_type)
    if math.prod(shape) * dtype.itemsize != raw.size:
        raise ModelLoadError(f"initializer '{tensor.name}' of '{path}' holds {raw.size:,} "
                             f"bytes, not the {math.prod(shape) * dtype.itemsize:,} of shape "
                             f"{list(shape)} in {dtype.name}; the file is corrupt: re-export "
                             "the model")  # fmt: skip
    return raw.view(dtype).reshape(shape)


def _take_arrays(model: ir.Model, proto: onnx.ModelProto, arrays: dict[int, object],
                 path: Path) -> None:  # fmt: skip
    """The weights read beside the proto (``_parsed``) become the initializers' tensors; the
    arrays also stay listed by name in ``model.meta[FILE_WEIGHTS]`` (the file's own values
    whatever later passes do to the model: the oracle's session of the file as given shares
    them instead of reading them again)."""
    weights = model.meta[FILE_WEIGHTS] = {}
    for index, raw in arrays.items():
        tensor = proto.graph.initializer[index]
        value = model.graph.initializers[tensor.name]
        weights[tensor.name] = file_weight(tensor, raw, path)
        value.const_value = ir.Tensor(weights[tensor.name], dtype=ir.DataType(tensor.data_type),
                                      name=tensor.name, doc_string=tensor.doc_string or None)  # fmt: skip


def _own_tensor_data(model: ir.Model) -> None:
    """Tensors stored in the proto (initializers and Constant values, subgraphs included)
    become arrays, each copied out of the proto once: protobuf hands a field's bytes out as a
    new copy on every read, which every look at a weight (scores, finiteness, slicing) would
    pay again, and once nothing refers to the proto its memory is freed."""

    def owned(tensor: object) -> object:
        if (not isinstance(tensor, ir.serde.TensorProtoTensor)
                or tensor.dtype in (ir.DataType.STRING, ir.DataType.UNDEFINED)
                or tensor.dtype.bitwidth < 8):  # fmt: skip
            return tensor
        return ir.Tensor(tensor.numpy(), dtype=tensor.dtype, name=tensor.name,
                         doc_string=tensor.doc_string)  # fmt: skip

    for graph in (model.graph, *model.graph.subgraphs()):
        for value in graph.initializers.values():
            value.const_value = owned(value.const_value)
        for node in graph:
            for name, attr in list(node.attributes.items()):
                if attr.type == ir.AttributeType.TENSOR:
                    node.attributes[name] = ir.AttrTensor(name, owned(attr.value),
                                                          doc_string=attr.doc_string)  # fmt: skip


def check_structure(proto: onnx.ModelProto, where: str, *, outputs: bool = True) -> None:
    """What onnx-ir would silently repair and onnxruntime reads differently: every tensor
    defined once (initializers, graph inputs other than initializers, node outputs), an
    opset for the default domain, and one this onnx knows; with ``outputs``, the declared
    output sizes (``_check_declared_outputs``).

    Raises:
        ModelLoadError: a tensor defined twice, or no default-domain opset.
        UnsupportedModelError: an opset newer than this onnx package.
    """
    graph = proto.graph
    seen: set[str] = set()
    initializers = [t.name for t in graph.initializer]
    inputs = [v.name for v in graph.input if v.name not in set(initializers)]
    for kind, names in (("initializer", initializers), ("graph input", inputs),
                        ("node output", [o for n in graph.node for o in n.output if o])):  # fmt: skip
        for name in names:
            if name in seen:
                raise ModelLoadError(f"{where} defines tensor '{name}' twice (again as a "
                                     f"{kind}); onnxruntime would read one of the definitions "
                                     "silently: fix the export")  # fmt: skip
            seen.add(name)
    default = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if not default and any(n.domain in ("", "ai.onnx") for n in graph.node):
        raise ModelLoadError(f"{where} declares no opset for the default ONNX domain; re-export "
                             "it (or add opset_import)")  # fmt: skip
    if outputs:
        _check_declared_outputs(proto, where)
    newest = onnx.defs.onnx_opset_version()
    if default and default[0] > newest:
        raise UnsupportedModelError(f"{where} uses ONNX opset {default[0]}, newer than this onnx "
                                    f"package supports ({newest}); upgrade onnx and "
                                    "onnxruntime")  # fmt: skip


def _check_declared_outputs(proto: onnx.ModelProto, where: str) -> None:
    """A static output size the model declares must be the size its producer gives (ONNX shape
    inference on a skeleton: weights of more than 4096 elements become typed inputs, so no
    weight is copied); sizes inference cannot tell are not judged."""
    declared = {o.name: [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
                         for d in o.type.tensor_type.shape.dim]
                for o in proto.graph.output if o.type.tensor_type.HasField("shape")}  # fmt: skip
    if not any(any(v is not None for v in dims) for dims in declared.values()):
        return
    skeleton = weightless(proto, left_out)
    if skeleton is proto:
        skeleton = onnx.ModelProto()
        skeleton.CopyFrom(proto)  # small: every initializer holds at most 4096 elements
    del skeleton.graph.value_info[:]  # the outputs' shapes come from inference alone
    del skeleton.graph.output[:]
    skeleton.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o.name)
                                 for o in proto.graph.output)  # fmt: skip
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=True)
    except Exception:  # noqa: BLE001 - inference gives up on some valid models: no verdict
        return
    for output in inferred.graph.output:
        want = declared.get(output.name)
        t = output.type.tensor_type
        if want is None or not t.HasField("shape") or len(t.shape.dim) != len(want):
            continue
        got = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
               for d in t.shape.dim]
        if any(w is not None and g is not None and w != g for w, g in zip(want, got,
                                                                        strict=True)):  # fmt: skip
            raise ModelLoadError(f"{where} declares output '{output.name}' with shape {want}, but "
                                 f"the graph computes {got}; fix the export's output shape")


def _dynamic_negative_dims(model: ir.Model) -> bool:
    """A negative static size (some exporters write -1 for dynamic) becomes an unknown dim;
    True if any did."""
    values = [*model.graph.inputs, *model.graph.outputs]
    values += [v for node in model.graph.all_nodes() for v in node.outputs]
    changed = False
    for value in values:
        shape = value.shape
        if shape is not None and any(isinstance(d, int) and d < 0 for d in shape):
            value.shape = ir.Shape([None if isinstance(d, int) and d < 0 else d for d in shape])
            changed = True
    return changed


def _check_external_data_readable(model: ir.Model, path: Path) -> None:
    """Every external-data location is relative, stays inside the model's folder (the folder
    of the path as given, as onnxruntime reads it: a Hugging Face snapshot folder of links
    into ``blobs/`` works), and names a file long enough for the tensor's offset + length."""
    folder = Path(os.path.abspath(path)).parent
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if not isinstance(tensor, ir.ExternalTensor):
            continue
        location = Path(tensor.location)
        where = f"initializer '{value.name}' of '{path}'"
        if location.is_absolute() or ".." in location.parts:
            raise ModelLoadError(f"{where} refers to external data '{location}' outside the "
                                 "model's folder; keep the data file next to the model")
        full = folder / location
        if full.is_symlink():
            full = _followed_link(value, tensor, full, folder, where)
        if not full.is_file():
            raise ModelLoadError(f"{where} refers to external data '{full}', which does not "
                                 "exist or is not a file; keep the data file next to the model")
        if full.stat().st_nlink > 1:
            raise ModelLoadError(f"{where} reads external data '{full}', which has "
                                 f"{full.stat().st_nlink} hard links; onnx-ir refuses such "
                                 "files (a link could expose another file): copy it to a file "
                                 "of its own")  # fmt: skip
        end = (tensor.offset or 0) + (tensor.length if tensor.length is not None
                                      else tensor.nbytes)  # fmt: skip
        if full.stat().st_size < end:
            raise ModelLoadError(f"{where} needs bytes up to {end:,} of '{full}', which holds "
                                 f"{full.stat().st_size:,}; the data file is truncated")


def _followed_link(value: ir.Value, tensor: ir.ExternalTensor, link: Path, folder: Path,
                   where: str) -> Path:  # fmt: skip
    """A data file that is a link is read from its target when the target lies within the
    folder two levels above the model's (a Hugging Face cache: ``snapshots/<rev>/`` links into
    ``blobs/``); the tensor then reads the target itself (onnx-ir refuses links out of the
    model's folder). Elsewhere the link is refused."""
    target = link.resolve()
    root = folder.parent.parent
    if not target.is_relative_to(root):
        raise ModelLoadError(f"{where} reads external data through link '{link}' to '{target}', "
                             f"outside '{root}'; copy the data file next to the model")
    value.const_value = ir.ExternalTensor(
        target.name, tensor.offset, tensor.length, tensor.dtype, shape=tensor.shape,
        name=tensor.name, base_dir=target.parent)  # fmt: skip
    return target


def uses_external_data(model: ir.Model) -> bool:
    return any(isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values())


def check_destination(out: Path) -> None:
    """Raise UsageError unless a file can be written at ``out``: its folder exists and is
    writable, and ``out`` is absent or a regular file (never a folder, device or FIFO)."""
    if not str(out) or out.name in ("", ".", ".."):
        raise UsageError(f"output path '{out}' names no file; give a file name such as small.onnx")
    folder = out.parent
    if not folder.exists():
        raise UsageError(f"output folder '{folder}' does not exist; create it first")
    if not folder.is_dir():
        raise UsageError(f"output folder '{folder}' is not a folder")
    if out.is_symlink() or (out.exists() and not out.is_file()):
        raise UsageError(f"output path '{out}' exists and is not a regular file; choose "
                         "another -o")  # fmt: skip
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"output folder '{folder}' is not writable")


def files_read(model: ir.Model, source: Path | None = None) -> set[Path]:
    """Every file ``model`` reads, resolved: its source file and its external-data files."""
    paths = {Path(source).resolve()} if source is not None else set()
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            paths.add((Path(tensor.base_dir) / tensor.location).resolve())
    return paths


def files_of(path: str | os.PathLike) -> set[Path]:
    """``files_read`` of the model file at ``path`` without loading it: the file and the
    external-data files its main-graph initializers name (``wire.external_data_locations``).

    Raises:
        ModelLoadError: as ``load_model`` does, for a file that is not a readable model.
    """
    path = Path(path)
    try:
        locations = wire.external_data_locations(path)
    except (wire.WireError, OSError):
        return files_read(load_model(path), path)  # raises its clear error
    return {path.resolve()} | {(path.parent / location).resolve() for location in locations}


def check_not_input(out: Path, protected: set[Path]) -> None:
    """Raise UsageError when writing ``out`` or its ``.data`` file would replace a file in
    ``protected`` (the input model and the external data it reads)."""
    for target in (out, out.parent / f"{out.name}.data"):
        if target.resolve() in protected:
            raise UsageError(f"writing '{out}' would replace '{target}', which the input model "
                             "reads; write the pruned model to another name or folder")


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def save_model(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    source: Path | None = None,
    external: bool | None = None,
    protected: set[Path] | None = None,
    movable: Path | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically, a few tensors in memory at a time. Models past
    the protobuf limit and ``external=True`` get a ``<name>.data`` file beside it; with
    ``external=None``, so do models still reading external data.

    Rule: everything is written into a private folder made with ``mkdtemp`` in the output
    folder (no predictable name another user could plant a link at), under the final file
    names, then renamed into place, the data file first; a rename replaces a link at the
    destination rather than following it. Files get the umask's permissions.

    ``movable``: a temporary data file every external tensor of ``model`` reads (a staged
    model's); where it lies on the destination's file system it is renamed into place instead
    of copied, and the tensors then read it there.

    Raises:
        UsageError: ``path`` or its data file is a file the input reads (``source``,
            ``protected``), or is not a place a file can be written.
    """
    out = Path(path)
    protected = set(protected or ()) | files_read(model, source)
    check_not_input(out, protected)
    check_destination(out)
    if external is None:
        external = uses_external_data(model)
    external = external or model_nbytes(model) > PROTOBUF_LIMIT
    data_name = f"{out.name}.data"
    if external:
        check_destination(out.parent / data_name)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staged = folder / out.name
        moved = external and movable is not None and _movable(model, movable, folder)
        if moved:  # the data file is taken over, not copied; the proto refers to it
            os.replace(movable, folder / data_name)
            _repoint(model, Path(os.path.abspath(movable)), folder / data_name)
            onnx.save(ir.to_proto(model), staged)
            os.chmod(folder / data_name, _umask_mode())
        elif external:
            data_file.write(model, staged, data_name)
            os.chmod(folder / data_name, _umask_mode())
        elif any(isinstance(v.const_value, ir.ExternalTensor)
                 for g in model.graphs() for v in g.initializers.values()):  # fmt: skip
            model = model.clone()  # small enough to inline: its external data read into a copy
            ir.external_data.load_to_model(model)
            ir.save(model, staged)
        else:  # large weights go to the file from their arrays, not through a proto
            wire.write_model(model, staged, min_bytes=8 * SMALL)
        os.chmod(staged, _umask_mode())
        if external:
            os.replace(folder / data_name, out.parent / data_name)
        os.replace(staged, out)
        if moved:
            _repoint(model, Path(os.path.abspath(folder / data_name)),
                     Path(os.path.abspath(out.parent / data_name)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def _movable(model: ir.Model, data: Path, folder: Path) -> bool:
    """Whether every external tensor of ``model`` reads ``data`` (and nothing else large is
    held in memory), and ``data`` can be renamed into ``folder`` (same file system)."""
    held = 0
    for value in (v for g in model.graphs() for v in g.initializers.values()):
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            if Path(tensor.path).resolve() != data.resolve():
                return False
        elif tensor is not None:
            held += tensor.nbytes
    return held < PROTOBUF_LIMIT // 2 and data.is_file() and (
        os.stat(data).st_dev == os.stat(folder).st_dev)  # fmt: skip


def _repoint(model: ir.Model, old: Path, new: Path) -> None:
    """External tensors reading ``old`` read the same bytes of ``new`` (the file was moved),
    in every graph of the model."""
    for value in (v for g in model.graphs() for v in g.initializers.values()):
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor) and os.path.abspath(tensor.path) == str(old):
            value.const_value = ir.ExternalTensor(
                new.name, tensor.offset, tensor.length, tensor.dtype, shape=tensor.shape,
                name=tensor.name, base_dir=new.parent)  # fmt: skip
