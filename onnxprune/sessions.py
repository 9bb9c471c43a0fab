"""The one place that opens onnxruntime sessions, and the files they need while opening.

Rules, by what the model is:

- a path: onnxruntime opens the file itself (and its external data); a ``FileModel`` (the
  file the user gave, with the weights ``load_model`` read from it): its graph bytes with
  those weights handed over as OrtValues (``_from_file``);
- an in-memory model whose tensor bytes fit under the inline limit (``model_io.PROTOBUF_LIMIT``;
  ``ONNXPRUNE_INLINE_LIMIT`` lowers it, for tests): its graph as serialized bytes, its
  main-graph weights of more than ``skeleton.SMALL`` elements (of the plain numpy types)
  handed over as OrtValues over their arrays, neither serialized nor copied (a model with
  external data inside If branches: everything serialized);
- a larger model whose weights all live in external data files of one folder, apart from at
  most the inline limit in memory (the working copy of an external-data model, its masked
  variant for the oracle, a staged pruned model): its weightless proto as bytes, with
  onnxruntime reading (memory-mapping) the data from that folder, so no weight is copied;
- any other larger model: saved with external data (``data_file``: a few tensors in memory
  at a time) into a private folder (``mkdtemp``) under the temp root (``--tmp-dir``, else
  ``ONNXPRUNE_TMPDIR``, else the system temp folder) that lives only while onnxruntime opens
  it (it has mapped the data by then; the mapping outlives the folder), after a check of the
  free space it needs.

Sessions of models past the inline limit do not pre-pack weights (a second copy of every
MatMul weight); their memory is the mapped data. ``runs_on`` answers whether a model runs on a
feed (the input-size probe); ``with_outputs`` opens a model with extra outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxprune import data_file, model_io, wire
from onnxprune.errors import UnsupportedModelError, UsageError, VerificationError
from onnxprune.skeleton import SMALL, STUB, checkable, split_weights, weightless

TMP_ENV = "ONNXPRUNE_TMPDIR"
INLINE_ENV = "ONNXPRUNE_INLINE_LIMIT"
TEMP_PREFIX = "onnxprune-"

#: Extra room a copy needs beyond its tensor bytes (the graph, alignment padding).
_SPACE_MARGIN = 64 * 2**20

_tmp_root: Path | None = None

Optimization = Literal["none", "basic", "all"]
_LEVELS = {
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def set_tmp_dir(path: str | os.PathLike | None) -> None:
    """Use ``path`` (an existing folder) for the temporary copies sessions need."""
    global _tmp_root
    if path is not None and not Path(path).is_dir():
        raise UsageError(f"temporary folder '{path}' does not exist; create it or choose "
                         "another with --tmp-dir")  # fmt: skip
    _tmp_root = None if path is None else Path(path)


def tmp_root() -> Path:
    """Where temporary model copies go: ``set_tmp_dir``, else ``$ONNXPRUNE_TMPDIR``, else the
    system temp folder."""
    if _tmp_root is not None:
        return _tmp_root
    env = os.environ.get(TMP_ENV)
    if env:
        if not Path(env).is_dir():
            raise UsageError(f"{TMP_ENV}='{env}' is not an existing folder; create it or unset it")
        return Path(env)
    return Path(tempfile.gettempdir())


def inline_limit() -> int:
    """Tensor bytes above which a model reaches onnxruntime as files rather than bytes."""
    env = os.environ.get(INLINE_ENV)
    return int(env) if env else model_io.PROTOBUF_LIMIT


def check_free_space(folder: Path, needed: int) -> None:
    """Raise UsageError when ``folder`` has fewer than ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UsageError(
            f"not enough free space in '{folder}' for a temporary copy of the model: "
            f"{needed:,} bytes needed, {free:,} free; free some space or point --tmp-dir "
            f"(or {TMP_ENV}) at a larger folder"
        )


def check_room_for(model: ir.Model) -> None:
    """Up front: raise UsageError when ``model`` will need temporary copies (past the inline
    limit) and the temp folder cannot hold one (they exist one at a time)."""
    nbytes = model_io.model_nbytes(model)
    if nbytes > inline_limit():
        check_free_space(tmp_root(), nbytes + _SPACE_MARGIN)


@contextlib.contextmanager
def scratch_folder(needed: int = 0) -> Iterator[Path]:
    """A private folder under ``tmp_root()`` with ``needed`` bytes free, removed on exit."""
    root = tmp_root()
    check_free_space(root, needed)
    folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Staged:
    """A model whose weights live in a temporary data file (``data``) until ``remove``."""

    model: ir.Model
    data: Path
    remove: Callable[[], None]


def staged(model: ir.Model) -> Staged:
    """``model`` written with external data into a private folder under the temp root (one
    tensor in memory at a time; weights computed on demand are computed then) and loaded back:
    its weights then live in that file, memory-mapped, instead of in memory; ``onnx.checker``
    checks the written file by path. ``remove`` deletes the folder (also run when the copy is
    garbage collected, and at exit)."""
    nbytes = model_io.model_nbytes(model)
    root = tmp_root()
    check_free_space(root, nbytes + _SPACE_MARGIN)
    folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root))
    try:
        path = folder / "model.onnx"
        data_file.write(model, path, "model.onnx.data")
        try:  # by path: the data file's references too
            bare = checkable(onnx.load(str(path), load_external_data=False))
            onnx.save(bare, folder / "check.onnx")
            onnx.checker.check_model(str(folder / "check.onnx"))
            (folder / "check.onnx").unlink()
        except onnx.checker.ValidationError as exc:
            raise VerificationError(f"the rewritten model fails onnx.checker: {exc}") from exc
        copy = ir.load(path)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Staged(copy, path.with_name("model.onnx.data"),
                  weakref.finalize(copy, shutil.rmtree, folder, True))


def session_options(optimization: Optimization = "none", threads: int = 0,
                    spinning: bool = True, large: bool = False,
                    prepack: bool = True) -> ort.SessionOptions:  # fmt: skip
    """Options of every session here. ``large`` or not ``prepack``: weights are not
    prepacked (a large model's would be copied; a session run on a few feeds, as the
    oracle's, spends longer packing than running: vgg11_bn 0.72 -> 0.40 s a session)."""
    options = ort.SessionOptions()
    if large or not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    options.graph_optimization_level = _LEVELS[optimization]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


@dataclass(frozen=True)
class FileModel:
    """A model file as given, with the weights ``load_model`` read from it, by name
    (``model_io.FILE_WEIGHTS``), for its session to share instead of reading them again."""

    path: Path
    weights: Mapping[str, np.ndarray]


def open_session(
    model: ir.Model | onnx.ModelProto | bytes | str | os.PathLike | FileModel,
    *,
    optimization: Optimization = "none",
    threads: int = 2,
    providers: Sequence[str] | None = None,
    spinning: bool = True,
    profile: str | None = None,
    prepack: bool = True,
) -> ort.InferenceSession:
    """An onnxruntime session for ``model`` (see the module docstring for where its bytes go);
    ``prepack=False`` for a session that runs only a few feeds (``session_options``).

    Raises:
        UnsupportedModelError: onnxruntime cannot build a session for the model.
        UsageError: a temporary copy is needed and the temp folder lacks the space.
    """
    nbytes = tensor_bytes(model)
    large = nbytes > inline_limit()
    options = session_options(optimization, threads, spinning, large, prepack)
    if profile is not None:  # onnxruntime's per-node profile, written under this prefix
        options.enable_profiling = True
        options.profile_file_prefix = profile
    providers = list(providers or ["CPUExecutionProvider"])
    if isinstance(model, FileModel):
        if not large:
            return _from_file(model, options, providers)
        model = str(model.path)
    if isinstance(model, ir.Model) and not large and not _branch_data(model):
        return _in_memory(model, options, providers, fed=optimization == "none" and not prepack)
    if not (large and isinstance(model, ir.Model)):
        return _create(_source(model), options, providers)
    folder = _data_folder(model)
    if folder is not None:
        options.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", str(folder))
        return _create(ir.to_proto(model).SerializeToString(), options, providers)
    with scratch_folder(nbytes + _SPACE_MARGIN) as scratch:
        path = scratch / "model.onnx"
        data_file.write(model, path, "model.onnx.data")
        return _create(str(path), options, providers)


#: Weight types onnxruntime takes as OrtValues over the arrays themselves.
_ORT_VALUE_TYPES = wire.PLAIN_TYPES


def _in_memory(model: ir.Model, options: ort.SessionOptions, providers: list[str],
               fed: bool = False) -> ort.InferenceSession:  # fmt: skip
    """A session of a model under the inline limit whose main-graph weights of more than
    ``SMALL`` elements reach onnxruntime as OrtValues over their arrays
    (``add_external_initializers``; the bytes onnxruntime parses hold the graph only): the
    weights are not serialized (measured on vgg11_bn, 507 MB: 2.0 -> 0.6 s a session), but
    onnxruntime 1.32 still copies them into buffers of its own (+516 MB of memory for
    vgg11_bn's session; ``add_initializer``, which would share them, refuses a data-less
    initializer in the graph). With ``fed`` (the oracle's sessions: no graph optimisation,
    no prepacking) they are graph inputs fed from the arrays instead (``FedSession``: no
    copy), unless onnxruntime cannot build the model so. The session keeps the arrays
    alive."""
    proto, tensors = split_weights(
        model, lambda t: t.size > SMALL and t.dtype in _ORT_VALUE_TYPES)
    weights = {name: np.array(tensor.numpy()) if isinstance(tensor, ir.ExternalTensor)  # its map
               else np.ascontiguousarray(tensor.numpy()) for name, tensor in tensors}  # may close
    return _with_weights(proto, weights, options, providers, fed)


def _with_weights(proto: onnx.ModelProto, weights: dict[str, np.ndarray],
                  options: ort.SessionOptions, providers: list[str],
                  fed: bool) -> ort.InferenceSession | FedSession:  # fmt: skip
    """A session of ``proto``, whose initializers named in ``weights`` are data-less stubs:
    with ``fed``, the weights as graph inputs fed from the arrays (``FedSession``), unless
    onnxruntime cannot build the model so (a kernel that needs a weight constant); else
    handed over as OrtValues over the arrays. The session keeps the arrays alive."""
    if fed and weights:
        try:
            session = _create(weightless(proto, lambda t: t.name in weights).SerializeToString(),
                              options, providers)  # fmt: skip
        except UnsupportedModelError:
            pass
        else:
            return FedSession(session, weights)
    if weights:
        options.add_external_initializers(
            list(weights), [ort.OrtValue.ortvalue_from_numpy(a) for a in weights.values()])
    session = _create(proto.SerializeToString(), options, providers)
    session._onnxprune_weights = list(weights.values())  # read when the session is built
    return session


def _from_file(model: FileModel, options: ort.SessionOptions,
               providers: list[str]) -> ort.InferenceSession:  # fmt: skip
    """A session of the file as given, under the inline limit: the file's own graph bytes
    without its large weights (``wire.read_without_weights``), the weights fed as inputs from
    the arrays ``load_model`` read from the file (read again where missing; ``FedSession``),
    else handed over as OrtValues. onnxruntime opening the file itself parses and copies
    every weight on top of its own copy (vgg11_bn, 507 MB: +928 MB at its peak); a file with
    external data, or one the wire walk cannot read, it does open itself."""
    try:
        split = wire.read_without_weights(model.path, min_bytes=8 * SMALL)
    except wire.WireError:
        return _create(str(model.path), options, providers)
    proto = onnx.ModelProto()
    proto.ParseFromString(split.model)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        return _create(str(model.path), options, providers)
    tensors = {i: proto.graph.initializer[i] for i in split.spans}

    def shared(index: int) -> np.ndarray | None:
        tensor, array = tensors[index], model.weights.get(tensors[index].name)
        fits = (array is not None and array.shape == tuple(tensor.dims)
                and array.dtype == wire.numpy_dtype(tensor.data_type))  # fmt: skip
        return array if fits else None

    arrays = {i: shared(i) for i in split.spans}
    missing = {i: span for i, span in split.spans.items() if arrays[i] is None}
    arrays.update((i, model_io.file_weight(tensors[i], raw, model.path))
                  for i, raw in wire.read_weights(model.path, missing).items())  # fmt: skip
    for index, tensor in tensors.items():  # a stub each, its array replaces its data
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", STUB), ("offset", "0"),
                           ("length", str(split.spans[index][1]))):  # fmt: skip
            tensor.external_data.add(key=key, value=value)
    return _with_weights(proto, {tensors[i].name: arrays[i] for i in split.spans}, options,
                         providers, fed=True)  # fmt: skip


class FedSession:
    """A session whose large weights are graph inputs, fed from the model's own arrays on
    every run: onnxruntime reads inputs in place, where weights handed over as initializers
    it copies (vgg11_bn: +516 MB and 0.2 s a session). For sessions that run a few feeds
    without graph optimisations (the oracle's): weights as inputs are neither folded nor
    prepacked. ``get_inputs`` lists the model's own inputs; the rest is the session's."""

    def __init__(self, session: ort.InferenceSession, weights: dict[str, np.ndarray]) -> None:
        self._session = session
        self._onnxprune_weights = list(weights.values())
        self._weights = weights

    def get_inputs(self) -> list:
        return [i for i in self._session.get_inputs() if i.name not in self._weights]

    def run(self, output_names, input_feed, run_options=None) -> list:
        return self._session.run(output_names, {**input_feed, **self._weights}, run_options)

    def __getattr__(self, name: str):
        return getattr(self._session, name)


def _branch_data(model: ir.Model) -> bool:
    """Whether a subgraph's initializer lives in external data (inlined by ``_source``)."""
    return any(isinstance(value.const_value, ir.ExternalTensor)
               for graph in model.graph.subgraphs() for value in graph.initializers.values())


def _source(model: ir.Model | onnx.ModelProto | bytes | str | os.PathLike) -> bytes | str:
    if isinstance(model, bytes):
        return model
    if isinstance(model, str | os.PathLike):
        return str(model)
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    inline = model.clone()
    ir.external_data.load_to_model(inline)
    return ir.to_proto(inline).SerializeToString()


def is_large(model: ir.Model | onnx.ModelProto | bytes | str | os.PathLike) -> bool:
    """Whether ``model``'s tensors exceed the inline limit (its sessions map external data)."""
    return tensor_bytes(model) > inline_limit()


def tensor_bytes(model: ir.Model | onnx.ModelProto | bytes | str | os.PathLike | FileModel) -> int:
    """Tensor bytes of a model (a path: its file and external data, from the file sizes)."""
    if isinstance(model, FileModel):
        model = model.path
    if isinstance(model, ir.Model):
        return model_io.model_nbytes(model)
    if isinstance(model, str | os.PathLike):
        folder = Path(model).parent
        try:  # a malformed file is onnxruntime's to report when it opens it
            files = wire.external_data_locations(model)
        except (wire.WireError, OSError):
            files = set()
        return Path(model).stat().st_size + sum((folder / f).stat().st_size for f in files
                                                if (folder / f).is_file())  # fmt: skip
    return len(model) if isinstance(model, bytes) else model.ByteSize()


def _data_folder(model: ir.Model) -> Path | None:
    """The one folder all of ``model``'s external tensors are read from, when the tensors held
    in memory (or computed on demand) fit under the inline limit; else None."""
    folders = set()
    held = 0
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            folders.add(Path(tensor.base_dir))
        elif tensor is not None:
            held += tensor.nbytes
    return folders.pop() if len(folders) == 1 and held <= inline_limit() else None


def with_outputs(model: ir.Model, names: Sequence[str], **options) -> ort.InferenceSession:
    """A session of ``model`` that also returns the intermediate values ``names`` (the model
    is left as it was)."""
    values = {v.name: v for n in model.graph for v in n.outputs}
    present = {v.name for v in model.graph.outputs}
    added = [values[n] for n in names if n not in present]
    model.graph.outputs.extend(added)
    try:
        return open_session(model, **options)
    finally:
        for _ in added:
            model.graph.outputs.pop()


def _create(source: bytes | str, options: ort.SessionOptions,
            providers: list[str]) -> ort.InferenceSession:  # fmt: skip
    try:
        return ort.InferenceSession(source, options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"onnxruntime cannot load the model ({first}); if it uses custom ops, install "
            "their library, else check the model with onnx.checker"
        ) from exc


class Probe:
    """Whether ``model`` runs on a feed in onnxruntime (session built on first use), keeping
    the outputs of every feed it ran (``outputs_of``), so that the oracle's check of the
    working copy against the input model does not run the working copy on those feeds again.
    A model onnxruntime cannot load at all (custom ops) cannot be probed: every size counts as
    running, and verification, if asked for, reports the load error."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.names: list[str] = []
        self._session: ort.InferenceSession | None = None
        self._opened = False
        self._outputs: dict[tuple, list[np.ndarray]] = {}

    def __call__(self, feed: Mapping[str, np.ndarray]) -> bool:
        if not self._opened:
            self._opened = True
            try:
                self._session = open_session(self.model)
                self.names = [o.name for o in self._session.get_outputs()]
            except UnsupportedModelError:
                self._session = None
        if self._session is None:
            return True
        try:
            outputs = self._session.run(None, dict(feed))
        except Exception:  # onnxruntime's own exception types: the size does not run
            return False
        self._outputs[feed_key(feed)] = outputs
        return True

    def outputs_of(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray] | None:
        """The outputs of a run on ``feed`` (the same names, shapes and values), or None."""
        return self._outputs.get(feed_key(feed))

    def close(self) -> None:
        """Drop the session (a large model's mapped weights; reopened if called again) and
        keep the outputs."""
        self._session = None
        self._opened = False


def feed_key(feed: Mapping[str, np.ndarray]) -> tuple:
    """A feed's identity: each input's name, type, shape and a digest of its bytes."""
    return tuple(sorted((name, np.asarray(v).dtype.str, np.shape(v),
                         hashlib.blake2b(np.ascontiguousarray(v).tobytes()).digest())
                        for name, v in feed.items()))  # fmt: skip


def runs_on(model: ir.Model) -> Probe:
    """A ``Probe`` of ``model``."""
    return Probe(model)
