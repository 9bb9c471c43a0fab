"""LSTM, GRU and RNN: the input width is contracted, the hidden width is one produced group.

With ``H`` = hidden_size, ``G`` gates (LSTM 4: i, o, f, c; GRU 3: z, r, h; RNN 1) and
``layout`` 0 (X ``[seq, batch, in]``, Y ``[seq, dirs, batch, H]``, Y_h/Y_c ``[dirs, batch, H]``)
or 1 (X ``[batch, seq, in]``, Y ``[batch, seq, dirs, H]``, Y_h/Y_c ``[batch, dirs, H]``):

- X's last axis is W's axis 2 (``[dirs, G·H, in]``), contracted away (masks go on X);
- hidden unit ``j`` is one canonical channel: rows ``g·H + j`` of W and R (every gate ``g``),
  entries ``g·H + j`` of B (``[dirs, 2·G·H]``: input then recurrent biases) and of P
  (LSTM peepholes, ``[dirs, 3·H]``), column ``j`` of R (the recurrent read of ``h_j``), axis
  ``j`` of initial_h/initial_c and of Y, Y_h, Y_c; every direction alike (they share Y's
  hidden axis).
- The units other than ``j`` read ``h_j`` only through column ``j`` of R, so that column is
  the consumer the oracle masks (a Mul on R); unit ``j``'s own gates go with it. The shrink
  pass rewrites ``hidden_size``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxprune.rules.context import RuleContext
from onnxprune.rules.registry import channel_rule

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _gate_rows(dim_size: int, hidden: int, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``g·H + j`` of a packed axis and the hidden unit ``j`` each belongs to."""
    if dim_size != blocks * hidden:
        raise ValueError(f"packed axis of size {dim_size} is not {blocks} x {hidden}")
    rows = np.arange(blocks * hidden)
    return rows, rows % hidden


@channel_rule("LSTM", "GRU", "RNN")
def recurrent(node: ir.Node, ctx: RuleContext) -> None:
    """See the module docstring: input width consumed, hidden width produced and packed."""
    gates = GATES[node.op_type]
    layout = ctx.attr("layout", 0)
    x, w, r = ctx.input(0), ctx.input(1), ctx.input(2)
    hidden = ctx.attr("hidden_size")
    if not (ctx.is_const(w) and ctx.is_const(r)) or not isinstance(hidden, int):
        ctx.block(f"{node.op_type} weights computed at run time or hidden_size unknown")
        return
    xd, wd, rd = ctx.dims(x), ctx.dims(w), ctx.dims(r)
    ctx.same(xd[2], wd[2])
    ctx.consume(xd[2], 0)
    outputs = [ctx.output(i) for i in range(3)]
    y, y_h, y_c = (v if v is not None and v.uses() or _is_graph_output(v) else None
                   for v in outputs)  # fmt: skip
    seq_axis, batch_axis = (1, 0) if layout else (0, 1)
    hidden_dims = []
    if y is not None:
        yd = ctx.dims(y)
        ctx.same(xd[seq_axis], yd[1 if layout else 0])
        ctx.same(xd[batch_axis], yd[0 if layout else 2])
        ctx.ignore(yd[2 if layout else 1])
        hidden_dims.append(yd[3])
    for state in (y_h, y_c, ctx.input(5), ctx.input(6)):
        if state is None:
            continue
        sd = ctx.dims(state)
        ctx.same(xd[batch_axis], sd[0 if layout else 1])
        ctx.ignore(sd[1 if layout else 0])
        hidden_dims.append(sd[2])
    unit = rd[2]
    for dim in hidden_dims:
        ctx.same(dim, unit)
    ctx.consume(unit, 2)
    for packed, blocks in ((wd[1], gates), (rd[1], gates)):
        rows, units = _gate_rows(ctx.size(packed), hidden, blocks)
        ctx.relate(packed, unit, rows, units)
    for index, blocks in ((3, 2 * gates), (7, 3)):
        extra = ctx.input(index)
        if extra is None:
            continue
        if not ctx.is_const(extra):
            ctx.block(f"{node.op_type} input {index} computed at run time", [extra])
            continue
        ed = ctx.dims(extra)
        rows, units = _gate_rows(ctx.size(ed[1]), hidden, blocks)
        ctx.relate(ed[1], unit, rows, units)
        ctx.ignore(ed[0])
    ctx.ignore(wd[0], rd[0])
    for v in outputs:
        if v is not None and v not in (y, y_h, y_c):
            ctx.ignore(*ctx.dims(v))
    lens = ctx.input(4)
    if lens is not None:
        ctx.ignore(*ctx.dims(lens))
    for dim in hidden_dims or [unit]:
        ctx.produce(dim)
    ctx.produce(unit)


def _is_graph_output(value: ir.Value | None) -> bool:
    return value is not None and value.is_graph_output()
