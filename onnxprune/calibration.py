"""Calibration data: batches of feeds, checked against the model's declared inputs.

Sources (:func:`calibration_batches`):

- any object with ``get_next()`` returning a feed dict or None (onnxruntime's
  ``CalibrationDataReader`` protocol);
- an iterable of feed dicts;
- an ``.npz`` file keyed by input name, samples along axis 0 (cut into batches of the
  model's static batch size, or of ``batch`` when it is symbolic);
- a folder of ``.npz`` files (one feed each) or of ``<input name>.npy`` files (samples along
  axis 0);
- ``random=N``: N random samples from the declared shapes: along a symbolic leading (batch)
  axis, else N feeds of the static shape; other symbolic dims from ``dims``.

Every feed is checked: names must be model inputs (all of them present), dtypes must cast
without loss of kind (float to float, int to int), static dims must match. Errors name the
input and what was expected.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune.errors import CalibrationDataError
from onnxprune.input_sizes import NUMPY_DTYPES, declared_inputs, random_inputs

Feed = dict[str, np.ndarray]


def check_feed(model: ir.Model, feed: Mapping[str, Any], where: str = "") -> Feed:
    """``feed`` as arrays of the declared dtypes; raises CalibrationDataError on mismatch."""
    declared = declared_inputs(model)
    at = f" ({where})" if where else ""
    unknown = sorted(set(feed) - set(declared))
    if unknown:
        raise CalibrationDataError(
            f"calibration input(s) {unknown}{at} are not inputs of the model; its inputs are "
            f"{sorted(declared)}"
        )
    missing = sorted(set(declared) - set(feed))
    if missing:
        raise CalibrationDataError(f"calibration data{at} lacks model input(s) {missing}")
    out: Feed = {}
    for name, value in declared.items():
        array = np.asarray(feed[name])
        want = np.dtype(NUMPY_DTYPES.get(value.dtype, np.float32))
        if array.dtype.kind != want.kind and not (
            array.dtype.kind in "iub" and want.kind in "iu"
        ):
            raise CalibrationDataError(
                f"input '{name}'{at} has dtype {array.dtype}, the model expects {want}"
            )
        shape = value.shape
        if shape is not None:
            if array.ndim != len(shape):
                raise CalibrationDataError(
                    f"input '{name}'{at} has shape {array.shape}, the model expects rank "
                    f"{len(shape)} ({shape})"
                )
            for axis, (got, expected) in enumerate(zip(array.shape, shape, strict=True)):
                if isinstance(expected, int) and got != expected:
                    raise CalibrationDataError(
                        f"input '{name}'{at} has size {got} on axis {axis}; the model "
                        f"declares {expected} ({shape})"
                    )
        if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
            bad = np.argwhere(~np.isfinite(array))[0]
            raise CalibrationDataError(
                f"input '{name}'{at} holds a non-finite value (sample {bad[0] if bad.size else 0}"
                f", index {tuple(int(i) for i in bad)}: {array[tuple(bad)]}); clean the data "
                "(NaN or inf would turn every statistic and refit weight into NaN)"
            )
        out[name] = array.astype(want, copy=False)
    return out


def _split(arrays: Mapping[str, np.ndarray], batch: int, where: str) -> Iterator[Feed]:
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1:
        raise CalibrationDataError(f"{where}: inputs hold different sample counts {lengths}")
    n = lengths.pop()
    for start in range(0, n, batch):
        yield {k: a[start : start + batch] for k, a in arrays.items()}


def _load_npz(path: Path) -> Feed:
    """The arrays of an ``.npz`` file; objects (pickles) are never loaded."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CalibrationDataError(f"'{path}' is not a readable .npz of numeric arrays "
                                   f"({type(exc).__name__}); save it with numpy.savez") from exc


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CalibrationDataError(f"'{path}' is not a readable .npy of numbers "
                                   f"({type(exc).__name__}); save it with numpy.save") from exc


def _from_path(path: Path, batch: int) -> Iterator[Feed]:
    if path.is_file() and path.suffix == ".npz":
        yield from _split(_load_npz(path), batch, str(path))
        return
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if files:
            for f in files:
                yield _load_npz(f)
            return
        npy = sorted(path.glob("*.npy"))
        if npy:
            yield from _split({f.stem: _load_array(f) for f in npy}, batch, str(path))
            return
        raise CalibrationDataError(f"folder '{path}' holds no .npz or .npy files")
    if not path.exists():
        raise CalibrationDataError(f"calibration data '{path}' does not exist")
    raise CalibrationDataError(
        f"'{path}' is not calibration data: give an .npz file or a folder of .npz/.npy files"
    )


def calibration_batches(
    model: ir.Model,
    source: Any = None,
    *,
    random: int = 0,
    dims: Mapping[str, int] | None = None,
    batch: int = 8,
) -> Iterator[Feed]:
    """Checked feeds from ``source`` (see module docstring) or ``random`` samples."""
    if source is None and not random:
        raise CalibrationDataError("no calibration data: give a source or random=N")
    if source is None:
        declared = declared_inputs(model).values()
        batched = {v.name for v in declared
                   if v.shape is not None and len(v.shape) and not isinstance(v.shape[0], int)}
        leading = {str(declared_inputs(model)[n].shape[0].value) for n in batched}
        # Samples go along the symbolic leading (batch) axes; other symbols come from dims.
        dims = {k: v for k, v in (dims or {}).items() if k not in leading}
        step = batch if batched else 1
        for start in range(0, random, step):
            n = min(step, random - start)
            sized = {k: (n, *v[1:]) if k in batched and not isinstance(v, int) else v
                     for k, v in dims.items()}  # fmt: skip
            yield check_feed(model, random_inputs(model, sized, batch=n, seed=start), "random")
        return
    if isinstance(source, str | Path):
        leading = {v.shape[0] for v in declared_inputs(model).values()
                   if v.shape is not None and len(v.shape)}  # fmt: skip
        if len(leading) == 1 and isinstance(next(iter(leading)), int):
            batch = next(iter(leading))  # a static batch: samples are cut to its size
        feeds: Iterable[Mapping[str, Any]] = _from_path(Path(source), batch)
    elif hasattr(source, "get_next"):
        feeds = iter(source.get_next, None)
    else:
        feeds = source
    count = 0
    for i, feed in enumerate(feeds):
        count += 1
        yield check_feed(model, feed, f"batch {i}")
    if not count:
        raise CalibrationDataError("the calibration data holds no batches")
