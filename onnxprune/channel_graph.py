"""The channel graph: nodes are channel dimensions ``(tensor, axis)``, edges say two dims
share index positions.

An edge carries a *position relation*: arrays ``(a_pos, b_pos)`` meaning position
``a_pos[t]`` of dim ``a`` is the same channel as position ``b_pos[t]`` of dim ``b``. Identity,
concat offsets, flatten blocks (C x H x W), repeats and permutations are all such relations.
Where one dim is the row-major product of others (Reshape, Flatten, grouped Conv), a
:class:`FactorBlock` records the factorisation; group formation picks one factor to prune
along and relates the merged dim to it, so removals stay rectangular.

Dims also carry what the rules declared about them: ``produced`` (weights create this
channel), consumers (ops that contract it away: masks go there), block reasons and
approximate reasons.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx
import numpy as np


@dataclass(frozen=True, order=True)
class Dim:
    """Axis ``axis`` of tensor ``tensor``; ``part`` = (k, sizes) for the k-th virtual factor.

    Its hash is computed once (dims key every map of the analysis and are hashed dozens of
    times each); a copy or a pickle is rebuilt from the three fields, so the hash is always
    this process's."""

    tensor: str
    axis: int
    part: tuple[int, tuple[int, ...]] | tuple[()] = ()
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.tensor, self.axis, self.part)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple:
        return Dim, (self.tensor, self.axis, self.part)

    @property
    def is_virtual(self) -> bool:
        return bool(self.part)

    def __str__(self) -> str:
        base = f"{self.tensor}[{self.axis}]"
        if self.part:
            k, sizes = self.part
            base += f"#{'x'.join(map(str, sizes))}.{k}"
        return base


@dataclass(frozen=True)
class Reason:
    """Why a dim cannot be pruned exactly: the node (or tensor) and a sentence."""

    where: str
    op_type: str
    text: str

    def __str__(self) -> str:
        return f"{self.op_type} '{self.where}': {self.text}"


@dataclass(frozen=True)
class Consumer:
    """Input ``input_index`` of node ``node`` contracts dim ``axis`` of that input away."""

    node: str
    input_index: int
    axis: int


@dataclass
class FactorBlock:
    """``merged`` is the row-major product of ``factors`` (outermost first), at ``node``."""

    merged: Dim
    factors: list[Dim]
    sizes: list[int]
    node: str


@dataclass
class DimInfo:
    """What the rules declared about one dim."""

    size: int | str | None
    produced: bool = False
    consumers: list[Consumer] = field(default_factory=list)
    blocked: list[Reason] = field(default_factory=list)
    approximate: list[Reason] = field(default_factory=list)


class ChannelGraph:
    """networkx graph of dims with position relations on its edges, plus factor blocks."""

    def __init__(self) -> None:
        self.graph = nx.Graph()
        self.blocks: list[FactorBlock] = []
        self._infos: dict[Dim, DimInfo] = {}  # also each node's "info": looked up without views

    def info(self, dim: Dim) -> DimInfo:
        return self._infos[dim]

    def add_dim(self, dim: Dim, size: int | str | None) -> DimInfo:
        """The dim's info, the dim added with ``size`` if new; a known size is kept, an
        unknown one takes ``size``."""
        self.add_dims(((dim, size),))
        return self._infos[dim]

    def add_dims(self, sizes: Iterable[tuple[Dim, int | str | None]]) -> None:
        """``add_dim`` of every (dim, size), in one loop."""
        infos, graph = self._infos, self.graph
        for dim, size in sizes:
            info = infos.get(dim)
            if info is None:
                info = infos[dim] = DimInfo(size)
                graph.add_node(dim, info=info)
            elif info.size is None and size is not None:
                info.size = size

    def relate(self, a: Dim, b: Dim, a_pos: np.ndarray, b_pos: np.ndarray) -> None:
        """Declare position ``a_pos[t]`` of ``a`` the same channel as ``b_pos[t]`` of ``b``."""
        if a == b and np.array_equal(a_pos, b_pos):
            return
        data = self.graph.get_edge_data(a, b)
        rel = (a, np.asarray(a_pos, dtype=np.int64), np.asarray(b_pos, dtype=np.int64))
        if data is None:
            self.graph.add_edge(a, b, relations=[rel])
        else:
            data["relations"].append(rel)

    def dims(self) -> list[Dim]:
        return list(self.graph.nodes)
