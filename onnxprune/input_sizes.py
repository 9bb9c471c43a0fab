"""The input sizes that verification, costs and random calibration all use, decided once.

Each axis of each declared input is sized by the first of:

1. ``dims`` from the caller (``--dim``): a symbolic dim's name, or an input's whole shape;
2. the first given verification input, else the first calibration batch (real data);
3. the declared static size;
4. for an axis still open, a candidate, tried until the *original* model runs: axis 0 is
   batch-like (1); an axis >= 2 of a float input of rank >= 4 is spatial (224, 256, 320, 640,
   ...); any other axis is sequence-like (16, 24, 64, ...). Axes sharing a dim name share a
   size. Size 1 is never a candidate elsewhere than the batch: attention over one key, a
   convolution's centre tap alone, a reflect ``Pad`` or ``Resize`` at 1x1 hide errors or fail.

Where some axis was symbolic and the caller did not size it, verification runs at a second
size too (batch 2, the next candidate that runs), which catches shape constants that hold at
one size only. If no candidate runs, UsageError names the inputs and ``--dim``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir

from onnxprune.errors import UsageError
from onnxprune.metrics import Dims, dim_size

NUMPY_DTYPES = {
    ir.DataType.FLOAT: np.float32, ir.DataType.FLOAT16: np.float16,
    ir.DataType.DOUBLE: np.float64, ir.DataType.INT32: np.int32, ir.DataType.INT64: np.int64,
    ir.DataType.INT8: np.int8, ir.DataType.UINT8: np.uint8, ir.DataType.BOOL: np.bool_,
}  # fmt: skip

SEQUENCE = (16, 24, 64, 8, 128, 32)
SPATIAL = (224, 256, 320, 640, 160, 96, 64, 32)
BATCH = (1, 2)

Shapes = dict[str, tuple[int, ...]]


def shapes_text(shapes: Mapping[str, Sequence[int]]) -> str:
    """``x 1x3x224x224, mask 1x16``: input shapes as the CLI, notes and reports print them."""
    return ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in shapes.items())


def declared_inputs(model: ir.Model) -> dict[str, ir.Value]:
    """The graph inputs a caller must feed (not those that double as initializers)."""
    initializers = set(model.graph.initializers)
    return {v.name: v for v in model.graph.inputs if v.name not in initializers}


def bound_shape(value: ir.Value, dims: Dims, default: Callable[[int], int]) -> list[int]:
    """``value``'s declared shape, symbolic axis k sized by ``dims`` (``metrics.Dims``), else
    ``default(k)``."""
    return [d if isinstance(d, int) else _sized(dims, value.name, k, d.value or "", default)
            for k, d in enumerate(value.shape or [])]  # fmt: skip


def _sized(dims: Dims, name: str, axis: int, dim_name: str, default: Callable[[int], int]) -> int:
    size = dim_size(dims, name, axis, dim_name, 0)
    return size if size else default(axis)


def random_inputs(
    model: onnx.ModelProto | ir.Model,
    dims: Dims | None = None,
    batch: int = 1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A feed for every declared graph input: floats ~ N(0, 1), integers in {0, 1} (valid token
    ids, attention masks and indices alike), bools.

    Symbolic dims take their value from ``dims`` (an input's whole shape or a dim name, as in
    ``metrics.Dims``), else ``batch`` for the first axis and 1 elsewhere.
    """
    if isinstance(model, onnx.ModelProto):
        model = ir.from_proto(model)
    dims = dict(dims or {})
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for value in declared_inputs(model).values():
        shape = bound_shape(value, dims, lambda k: batch if k == 0 else 1)
        dtype = NUMPY_DTYPES.get(value.dtype, np.float32)
        if np.issubdtype(dtype, np.floating):
            feed[value.name] = np.asarray(rng.standard_normal(shape), dtype=dtype)
        elif dtype is np.bool_:
            feed[value.name] = np.asarray(rng.random(shape) < 0.5)
        else:
            feed[value.name] = np.asarray(rng.integers(0, 2, shape), dtype=dtype)
    return feed


@dataclass
class InputSizes:
    """Whole input shapes at the first size (costs count here) and, where an axis was open,
    at a second one (verification only); ``probed`` names the axes a candidate sized."""

    shapes: Shapes
    second: Shapes | None = None
    probed: list[str] = field(default_factory=list)
    #: whether the model was run to choose the probed sizes (else: the first candidates)
    ran: bool = True

    @property
    def dims(self) -> Shapes:
        """The first size as ``metrics.Dims`` (each input's whole shape)."""
        return dict(self.shapes)

    def describe(self, shapes: Shapes | None = None) -> str:
        return shapes_text(self.shapes if shapes is None else shapes) or "no inputs"

    def random_feeds(self, model: ir.Model, count: int = 2) -> list[dict[str, np.ndarray]]:
        """``count`` random feeds: the first at the first size, the others at the second size
        where there is one."""
        return [random_inputs(model, self.shapes if k == 0 or self.second is None
                              else self.second, seed=k) for k in range(count)]  # fmt: skip


def _open_axes(model: ir.Model, dims: Dims, feed: Mapping[str, np.ndarray] | None
               ) -> dict[tuple[str, int], tuple[str, str]]:  # fmt: skip
    """Symbolic axes neither ``dims`` nor ``feed`` size: (input, axis) -> (kind, dim name)."""
    out: dict[tuple[str, int], tuple[str, str]] = {}
    for name, value in declared_inputs(model).items():
        if value.shape is None or (feed is not None and name in feed):
            continue
        rank = len(value.shape)
        floating = value.dtype is not None and value.dtype.is_floating_point()
        for axis, d in enumerate(value.shape):
            if isinstance(d, int) or dim_size(dims, name, axis, d.value or "", 0):
                continue
            kind = ("batch" if axis == 0 else "spatial" if floating and rank >= 4 and axis >= 2
                    else "sequence")  # fmt: skip
            out[(name, axis)] = (kind, d.value or f"{name}[{axis}]")
    return out


def _shapes(model: ir.Model, dims: Dims, feed: Mapping[str, np.ndarray] | None,
            chosen: Mapping[tuple[str, int], int]) -> Shapes:  # fmt: skip
    shapes: Shapes = {}
    for name, value in declared_inputs(model).items():
        fed = np.shape(feed[name]) if feed is not None and name in feed else None
        if fed is not None and value.shape is not None and len(fed) == len(value.shape):
            shapes[name] = tuple(bound_shape(value, dims, lambda k, fed=fed: int(fed[k])))
            continue
        shapes[name] = tuple(bound_shape(value, dims, lambda k, name=name: chosen.get((name, k), 1)))
    return shapes


def _assignments(open_axes: Mapping[tuple[str, int], tuple[str, str]], batch: int,
                 start: int = 0) -> list[dict[tuple[str, int], int]]:  # fmt: skip
    """Candidate sizes for every open axis together, the i-th candidate of each kind."""
    kinds = {kind for kind, _ in open_axes.values()} - {"batch"}
    lengths = [len(SEQUENCE if k == "sequence" else SPATIAL) for k in kinds] or [1]
    out = []
    for i in range(start, max(lengths)):
        sizes = {"batch": batch, "sequence": SEQUENCE[min(i, len(SEQUENCE) - 1)],
                 "spatial": SPATIAL[min(i, len(SPATIAL) - 1)]}  # fmt: skip
        by_name: dict[str, int] = {}
        chosen = {}
        for key, (kind, dim_name) in open_axes.items():
            chosen[key] = by_name.setdefault(dim_name, sizes[kind])
        out.append(chosen)
    return out


def decide_sizes(
    model: ir.Model,
    dims: Dims | None = None,
    feed: Mapping[str, np.ndarray] | None = None,
    runs: Callable[[dict[str, np.ndarray]], bool] | None = None,
) -> InputSizes:
    """The input sizes to run and count at (module docstring). ``feed``: real data whose
    shapes size the inputs it holds; ``runs(feed)``: whether the original model runs on a
    feed (no probing without it: open axes then take the first candidate). The first size is
    probed on ``random_inputs``' seed 0 and the second on seed 1: the feeds ``random_feeds``
    gives the oracle, so a probe that keeps its runs (``sessions.Probe``) serves it too."""
    dims = dict(dims or {})
    _check_dims(model, dims)
    open_axes = _open_axes(model, dims, feed)
    if not open_axes:
        shapes = _shapes(model, dims, feed, {})
        if dims and runs is not None and not runs(random_inputs(model, shapes)):
            raise UsageError(f"the model does not run at the given sizes "
                             f"{InputSizes(shapes).describe()}; give sizes it runs at with "
                             "--dim (dims= in the API)")  # fmt: skip
        return InputSizes(shapes)
    probed = sorted({name for _, name in open_axes.values()})
    candidates = _assignments(open_axes, BATCH[0])
    first = None
    for index, chosen in enumerate(candidates):
        shapes = _shapes(model, dims, feed, chosen)
        if runs is None or runs(random_inputs(model, shapes)):
            first = index, shapes
            break
    if first is None:
        tried = ", ".join(InputSizes({}).describe(_shapes(model, dims, feed, c))
                          for c in candidates[:3])  # fmt: skip
        raise UsageError(
            f"the model does not run at any size tried for its symbolic input dims "
            f"{probed} (tried {tried}, ...); give the sizes it runs at with --dim NAME=INT or "
            "--dim INPUT=INT,INT,... (or dims= in the API)"
        )
    index, shapes = first
    second = None
    batch_open = any(kind == "batch" for kind, _ in open_axes.values())
    others = any(kind != "batch" for kind, _ in open_axes.values())
    later = _assignments(open_axes, BATCH[1], index + 1) if others else []
    if batch_open:
        later.append(_assignments(open_axes, BATCH[1], index)[0])
    for chosen in later:
        candidate = _shapes(model, dims, feed, chosen)
        if candidate != shapes and (runs is None or runs(random_inputs(model, candidate,
                                                                        seed=1))):
            second = candidate
            break
    return InputSizes(shapes, second, probed, ran=runs is not None)


def _check_dims(model: ir.Model, dims: Dims) -> None:
    """Every key of ``dims`` names a symbolic dim or an input (with its rank, agreeing with
    its static sizes); sizes are positive."""
    declared = declared_inputs(model)
    names = {d.value for v in declared.values() for d in (v.shape or [])
             if not isinstance(d, int) and d.value}  # fmt: skip
    for key, size in dims.items():
        sizes = [size] if isinstance(size, int) else list(size)
        if any(not isinstance(s, int | np.integer) or s < 1 for s in sizes):
            raise UsageError(f"--dim {key}: sizes must be positive integers, got {size}")
        if key in declared:
            shape = declared[key].shape
            if isinstance(size, int) and key not in names:
                raise UsageError(f"--dim {key}={size}: '{key}' is an input; give its whole "
                                 "shape (INPUT=INT,INT,...)")  # fmt: skip
            if shape is not None and not isinstance(size, int):
                if len(sizes) != len(shape):
                    raise UsageError(f"--dim {key}: the input has rank {len(shape)} "
                                     f"({list(shape)}), got {len(sizes)} sizes")  # fmt: skip
                for axis, (s, d) in enumerate(zip(sizes, shape, strict=True)):
                    if isinstance(d, int) and d != s:
                        raise UsageError(f"--dim {key}: axis {axis} is {d} in the model, "
                                         f"got {s}")  # fmt: skip
        elif key not in names:
            raise UsageError(
                f"--dim {key}: no input has a symbolic dim or name '{key}'; symbolic dims: "
                f"{sorted(names) or 'none'}, inputs: {sorted(declared)}"
            )


def feeds_for_verification(
    model: ir.Model,
    sizes: InputSizes,
    inputs: Sequence[Mapping[str, np.ndarray]] | None,
    calibration: Sequence[Mapping[str, np.ndarray]] = (),
) -> list[dict[str, np.ndarray]]:
    """The feeds the oracle runs on: the caller's ``inputs`` as given; else up to two
    calibration batches (real data) plus a random feed at the second size; else random feeds
    at both sizes."""
    if inputs is not None:
        return [dict(f) for f in inputs]
    feeds = [dict(f) for f in list(calibration)[:2]]
    if not feeds:
        return sizes.random_feeds(model)
    if sizes.second is not None:
        feeds.append(random_inputs(model, sizes.second, seed=1))
    return feeds
