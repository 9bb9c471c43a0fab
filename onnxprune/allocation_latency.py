"""Latency-aware allocation: channels go in order of importance per millisecond.

Cost table (:func:`channel_costs`): one onnxruntime profile of the working model at the
decided input sizes, without graph optimisations so every kernel keeps its node's name
(``PROFILE_RUNS`` runs after a warm-up, median kernel time per node). A node whose input or
output channels belong to a group gets slower or faster with that group's width, about in
proportion (a Conv's time is in x out channels: dropping a share f of either saves about f
of it), so a group's cost per canonical channel is the summed time of the nodes touching its
member tensors, divided by its channel count.

Allocation (:func:`allocate_latency`): the per-group normalised scores (as ``global``)
divided by the group's cost per channel rank every eligible channel model-wide; the lowest
go until the costs removed reach ``fraction`` of the table's total. Floors are those of
``global``: each channel class keeps ``min_channels`` and ``1 - max_share`` of its channels,
rounded up to ``round_to``. Targets search ``fraction`` as they search the other shares.

Kernel alignment (:func:`kernel_block`): unless ``round_to`` is given, this allocation keeps
channel counts in multiples of onnxruntime's NCHWc block on the running CPU (16 with AVX-512,
8 with AVX/AVX2 on x86, 1 elsewhere): a convolution whose channels are not a multiple of it
leaves the blocked layout and pays reorders around it. Measured at 224x224, 50% of MACs:
pruned mobilenet_v2 0.90x -> 1.70x, efficientnet_b0 0.77x -> 1.58x with a block of 16
(tools/results/bench_allocation_224.md). A head or other unit wider than the block is not
affected (the rounding counts channels).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxprune.allocation_global import MAX_SHARE, per_cost
from onnxprune.errors import UsageError
from onnxprune.groups import Group
from onnxprune.sessions import open_session, scratch_folder

#: Profiled runs (after one warm-up run) per cost table.
PROFILE_RUNS = 10


def node_times(model: ir.Model, feed: Mapping[str, np.ndarray],
               providers: Sequence[str] | None = None) -> dict[str, float]:  # fmt: skip
    """Median kernel time (ms) per node name over ``PROFILE_RUNS`` profiled runs."""
    with scratch_folder() as folder:
        session = open_session(model, providers=providers,
                               profile=str(Path(folder) / "profile"))  # fmt: skip
        session.run(None, dict(feed))
        for _ in range(PROFILE_RUNS):
            session.run(None, dict(feed))
        events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[str, list[float]] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            times.setdefault(name[: -len("_kernel_time")], []).append(event["dur"] / 1000.0)
    return {name: float(np.median(ts[1:] if len(ts) > 1 else ts)) for name, ts in times.items()}


def channel_costs(model: ir.Model, groups: Sequence[Group], times: Mapping[str, float],
                  ) -> dict[int, float]:  # fmt: skip
    """Milliseconds per canonical channel of each group (module docstring)."""
    values = {v.name: v for node in model.graph for v in (*node.inputs, *node.outputs)
              if v is not None}  # fmt: skip
    costs = {}
    for group in groups:
        nodes: set[str] = set()
        for dim in group.atom_of:
            value = values.get(dim.tensor)
            if value is None:
                continue
            if value.producer() is not None:
                nodes.add(value.producer().name)
            nodes.update(use.node.name for use in value.uses())
        total = sum(times.get(n, 0.0) for n in nodes)
        costs[group.id] = total / max(group.n_atoms, 1)
    return costs


def kernel_block() -> int:
    """onnxruntime's NCHWc channel block on this CPU (see the module docstring)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return 1
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return 8
    return 16 if "avx512f" in flags else 8


def allocate_latency(
    groups: list[Group],
    scores: dict[int, np.ndarray],
    fraction: float,
    *,
    costs: Mapping[int, float],
    round_to: int = 1,
    min_channels: int = 1,
    max_share: float = MAX_SHARE,
    skip: set[int] | None = None,
) -> dict[int, np.ndarray]:
    """Removed canonical channels per group: the lowest score per millisecond first, until
    ``fraction`` of the total channel cost is removed."""
    if not 0.0 <= fraction < 1.0:
        raise UsageError(f"latency fraction must be in [0, 1), got {fraction}")
    return per_cost(groups, scores, fraction, costs, round_to=round_to,
                    min_channels=min_channels, max_share=max_share, skip=skip)
