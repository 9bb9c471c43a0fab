"""The one place that opens onnxruntime sessions, and the files they need while opening.

Rule: a model that exists on disk (a path) is opened from that file. An in-memory model whose
tensor bytes fit under the inline limit (``model_io.PROTOBUF_LIMIT``; ``ONNXPRUNE_INLINE_LIMIT``
lowers it, for tests) goes to onnxruntime as serialized bytes. A larger one is saved with
external data into a private folder (``mkdtemp``) under the temp root (``--tmp-dir``, else
``ONNXPRUNE_TMPDIR``, else the system temp folder) that lives only while onnxruntime builds the
session: onnxruntime has read (or memory-mapped) every tensor by the time its constructor
returns, so the folder is removed right then, and on any error or interrupt. Before such a
copy is written the free space of the temp root is checked against the bytes it needs.
``runs_on`` answers whether a model runs on a feed (the input-size probe).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxprune import model_io
from onnxprune.errors import UnsupportedModelError, UsageError

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


def session_options(optimization: Optimization = "none", threads: int = 0,
                    spinning: bool = True) -> ort.SessionOptions:  # fmt: skip
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[optimization]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(
    model: ir.Model | onnx.ModelProto | bytes | str | os.PathLike,
    *,
    optimization: Optimization = "none",
    threads: int = 2,
    providers: Sequence[str] | None = None,
    spinning: bool = True,
) -> ort.InferenceSession:
    """An onnxruntime session for ``model`` (see the module docstring for where its bytes go).

    Raises:
        UnsupportedModelError: onnxruntime cannot build a session for the model.
        UsageError: a temporary copy is needed and the temp folder lacks the space.
    """
    options = session_options(optimization, threads, spinning)
    providers = list(providers or ["CPUExecutionProvider"])
    if isinstance(model, ir.Model) and model_io.model_nbytes(model) > inline_limit():
        with scratch_folder(model_io.model_nbytes(model) + _SPACE_MARGIN) as folder:
            path = folder / "model.onnx"
            ir.save(model, path, external_data="model.onnx.data")
            return _create(str(path), options, providers)
    return _create(_source(model), options, providers)


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


def runs_on(model: ir.Model) -> Callable[[dict[str, np.ndarray]], bool]:
    """Whether ``model`` runs on a feed in onnxruntime (session built on first use). A model
    onnxruntime cannot load at all (custom ops) cannot be probed: every size counts as
    running, and verification, if asked for, reports the load error."""
    holder: list = []

    def runs(feed: dict[str, np.ndarray]) -> bool:
        if not holder:
            try:
                holder.append(open_session(model))
            except UnsupportedModelError:
                holder.append(None)
        if holder[0] is None:
            return True
        try:
            holder[0].run(None, feed)
        except Exception:  # onnxruntime's own exception types: the size does not run
            return False
        return True

    return runs
