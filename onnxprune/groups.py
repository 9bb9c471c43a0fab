"""Form zero-invariant groups from the channel graph.

1. Factor blocks choose one factor to prune along. Factors are ranked by: their component is
   free of blocks; it holds a dim that a node with a constant weight produces (so opening it
   can make a group: an embedding inside a reshaped axis); how often they are the outermost
   factor (heads before head_dim, C before H x W; with ``inner=True`` the innermost: head_dim
   before heads); then size. A factor opens when no other factor of its blocks is open, and
   the remaining factors are kept whole. The merged dim is then related to the open factor:
   position p ~ index of p along that factor, so removals are always rectangular.
2. Dims connected by relations form a component; positions related (transitively) form one
   canonical channel (an *atom*). Removing atom k removes its positions from every member.
3. A component is a group when weights produce one of its dims. It is blocked when any member
   is blocked (model input/output, unknown op, unprovable rule, unknown size); approximate
   when an op normalises over a member.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import numpy.ma  # noqa: F401 - np.unique imports it on first use (6 ms): imported with the package

from onnxprune.analysis import Analysis
from onnxprune.channel_graph import ChannelGraph, Consumer, Dim, FactorBlock, Reason
from onnxprune.graph_values import reads_constant


@dataclass
class Group:
    """A set of dims whose channels are removed together, in one canonical index space."""

    id: int
    atom_of: dict[Dim, np.ndarray]
    n_atoms: int
    produced: list[Dim]
    consumers: list[tuple[Dim, Consumer]]
    blocked: list[Reason] = field(default_factory=list)
    approximate: list[Reason] = field(default_factory=list)

    @property
    def members(self) -> list[Dim]:
        return sorted(self.atom_of)

    @property
    def prunable(self) -> bool:
        return not self.blocked

    @property
    def exact(self) -> bool:
        return not self.blocked and not self.approximate

    @property
    def width(self) -> int:
        """Channels of the widest produced member (what a user calls the layer width)."""
        return max((self.atom_of[d].size for d in self.produced), default=0)

    @property
    def atom_size(self) -> int:
        """Positions one canonical channel covers in the widest produced member (head_dim...)."""
        return max(1, self.width // max(1, self.n_atoms))

    def interface_only(self) -> bool:
        return bool(self.blocked) and all(
            r.op_type in ("model input", "model output") for r in self.blocked
        )

    def kept_positions(self, removed: np.ndarray) -> dict[Dim, np.ndarray]:
        """Kept positions of every member when atoms ``removed`` go."""
        return {d: np.flatnonzero(~np.isin(a, removed)) for d, a in self.atom_of.items()}


def _is_clean(graph: ChannelGraph, analysis: Analysis, dims: set[Dim]) -> bool:
    for d in dims:
        info = graph.info(d)
        if info.blocked or info.approximate or d.tensor in analysis.tensor_blocks:
            return False
    return True


def _weight_produced(graph: ChannelGraph, analysis: Analysis, dims: set[Dim]) -> bool:
    """Some dim of ``dims`` is produced by a node with a constant input (a weight)."""
    for d in dims:
        if not graph.info(d).produced:
            continue
        value = analysis.value(d.tensor)
        node = value.producer() if value is not None else None
        if node is not None and reads_constant(node):
            return True
    return False


def _choose_factors(
    analysis: Analysis, components: list[set[Dim]], comp_of: dict[Dim, int], inner: bool = False
) -> tuple[list[tuple[FactorBlock, int]], list[tuple[Dim, Reason]]]:
    """Pick the open factor of each block; returns (block, factor index) and fixed dims."""
    graph = analysis.graph
    rank: dict[int, list] = {}
    for block in graph.blocks:
        real = [k for k, s in enumerate(block.sizes) if s != 1]
        for pos, k in enumerate(real):
            c = comp_of[block.factors[k]]
            entry = rank.setdefault(c, [_is_clean(graph, analysis, components[c]),
                                        _weight_produced(graph, analysis, components[c]),
                                        0, 0])  # fmt: skip
            entry[2] += pos == (len(real) - 1 if inner else 0)
            entry[3] = max(entry[3], block.sizes[k])
    opened: set[int] = set()
    fixed: set[int] = set()
    blocks_of: dict[int, list[FactorBlock]] = {}
    for block in graph.blocks:
        for f in block.factors:
            blocks_of.setdefault(comp_of[f], []).append(block)
    for c in sorted(rank, key=lambda c: tuple(rank[c]), reverse=True):
        if c in fixed:
            continue
        conflict = False
        for block in blocks_of[c]:
            others = {comp_of[f] for f, s in zip(block.factors, block.sizes, strict=True) if s != 1}
            others.discard(c)
            if others & opened:
                conflict = True
        if conflict:
            fixed.add(c)
            continue
        opened.add(c)
        for block in blocks_of[c]:
            for f, s in zip(block.factors, block.sizes, strict=True):
                if s != 1 and comp_of[f] != c:
                    fixed.add(comp_of[f])
    chosen: list[tuple[FactorBlock, int]] = []
    kept_whole: list[tuple[Dim, Reason]] = []
    for block in graph.blocks:
        real = [k for k, s in enumerate(block.sizes) if s != 1]
        open_k = [k for k in real if comp_of[block.factors[k]] in opened]
        if len(open_k) == 1:
            chosen.append((block, open_k[0]))
        shape = " x ".join(map(str, block.sizes))
        for k in real:
            if k not in open_k[:1]:
                kept_whole.append(
                    (block.factors[k], Reason(block.node, "factor", f"{block.merged} = {shape}: "
                                              f"factor {k} is kept whole"))
                )
        if not open_k:
            kept_whole.append(
                (block.merged, Reason(block.node, "factor", f"{block.merged} = {shape}: no "
                                      "factor can be pruned"))
            )
    return chosen, kept_whole


def _dim_key(dim: Dim) -> tuple:
    """A dim's sort key: the order of its fields, compared as a tuple (no Python-level
    dataclass comparison per pair)."""
    return dim.tensor, dim.axis, dim.part


def _block_relation(block: FactorBlock, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Position p of the merged dim is position (p // inner) % size_k of factor k; one array
    for both sides where every other factor is 1 (p is p: a depthwise Conv's channels)."""
    total = int(np.prod(block.sizes))
    positions = np.arange(total)
    if block.sizes[k] == total:
        return positions, positions
    inner = int(np.prod(block.sizes[k + 1 :]))
    return positions, (positions // inner) % block.sizes[k]


def form_groups(analysis: Analysis, *, inner: bool = False) -> list[Group]:
    """Groups of the analysed model (blocked ones included, with their reasons); ``inner``
    prunes along the innermost factor of split dims (head_dim instead of whole heads)."""
    graph = analysis.graph
    components = [set(c) for c in nx.connected_components(graph.graph)]
    comp_of = {d: i for i, comp in enumerate(components) for d in comp}
    chosen, kept_whole = _choose_factors(analysis, components, comp_of, inner)

    extra: list[tuple[Dim, Dim, np.ndarray, np.ndarray]] = []
    for block, k in chosen:
        a_pos, b_pos = _block_relation(block, k)
        extra.append((block.merged, block.factors[k], a_pos, b_pos))
    fixed_reasons: dict[Dim, list[Reason]] = {}
    for dim, reason in kept_whole:
        fixed_reasons.setdefault(dim, []).append(reason)
    extra_by_dim: dict[Dim, list] = {}
    for rel in extra:
        extra_by_dim.setdefault(rel[0], []).append(rel)

    groups: list[Group] = []
    for comp in _joined(components, comp_of, [(m, f) for m, f, _, _ in extra]):
        produced = sorted((d for d in comp if graph.info(d).produced), key=_dim_key)
        if not produced:
            continue
        group = _build_group(analysis, comp, produced, extra_by_dim, fixed_reasons)
        group.id = len(groups)
        groups.append(group)
    return groups


def _joined(components: list[set[Dim]], comp_of: dict[Dim, int],
            edges: list[tuple[Dim, Dim]]) -> list[set[Dim]]:  # fmt: skip
    """The components with those that ``edges`` (the factor relations) connect joined, in
    the order of their first component (the order ``nx.connected_components`` gives for the
    graph with those edges added)."""
    if not edges:
        return components
    parent = list(range(len(components)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in edges:
        ra, rb = root(comp_of[a]), root(comp_of[b])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    joined: dict[int, set[Dim]] = {}
    for i, comp in enumerate(components):
        joined.setdefault(root(i), set()).update(comp)
    return list(joined.values())


def _build_group(
    analysis: Analysis,
    comp: set[Dim],
    produced: list[Dim],
    extra_by_dim: dict[Dim, list],
    fixed_reasons: dict[Dim, list[Reason]],
) -> Group:
    graph = analysis.graph
    blocked: list[Reason] = []
    approximate: list[Reason] = []
    consumers: list[tuple[Dim, Consumer]] = []
    sizes: dict[Dim, int] = {}
    for d in sorted(comp, key=_dim_key):
        info = graph.info(d)
        blocked.extend(info.blocked)
        blocked.extend(fixed_reasons.get(d, []))
        approximate.extend(info.approximate)
        consumers.extend((d, c) for c in info.consumers)
        if not d.is_virtual:
            blocked.extend(analysis.tensor_blocks.get(d.tensor, []))
        if isinstance(info.size, int):
            sizes[d] = info.size
        else:
            blocked.append(Reason(d.tensor, "shape", f"size of {d} is unknown"))
    group = Group(-1, {}, 0, produced, consumers, _unique(blocked), _unique(approximate))
    if len(sizes) < len(comp):
        group.atom_of = {d: np.zeros(s, np.int64) for d, s in sizes.items() if not d.is_virtual}
        return group
    first = set(produced)
    order = sorted(comp, key=lambda d: (d not in first, _dim_key(d)))
    identity = _identity_width(graph, comp, sizes, extra_by_dim)
    if identity is not None:  # every member is the same n channels, position for position
        group.n_atoms = identity
        canonical = np.arange(identity)
        group.atom_of = {d: canonical for d in order if not d.is_virtual}
        return group
    offset: dict[Dim, int] = {}
    total = 0
    for d in order:
        offset[d] = total
        total += sizes[d]
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for a, b in graph.graph.edges(comp):  # a component's edges are those touching it
        for src, a_pos, b_pos in graph.graph.edges[a, b]["relations"]:
            dst = b if src == a else a
            rows.append(a_pos + offset[src])
            cols.append(b_pos + offset[dst])
    for d in comp:
        for src, dst, a_pos, b_pos in extra_by_dim.get(d, []):
            rows.append(a_pos + offset[src])
            cols.append(b_pos + offset[dst])
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    # Canonical order: atoms numbered by first appearance, produced members first (a
    # component's label is its first position, so ascending labels are that order).
    labels, canonical = np.unique(_smallest_connected(r, c, total), return_inverse=True)
    group.n_atoms = int(labels.size)
    group.atom_of = {
        d: canonical[offset[d] : offset[d] + sizes[d]] for d in order if not d.is_virtual
    }
    return group


def _smallest_connected(r: np.ndarray, c: np.ndarray, total: int) -> np.ndarray:
    """For each of ``total`` positions, the smallest position joined to it by the pairs
    ``(r[t], c[t])``. Each position points at a smaller or equal one of its component (at
    first itself); the roots of a pair's two ends are pointed at the smaller of them, then
    every position at its root; until every pair's ends share a root, which is then its
    component's smallest position."""
    labels = np.arange(total)
    while r.size:
        root_r, root_c = labels[r], labels[c]
        apart = root_r != root_c
        if not apart.any():
            break
        root_r, root_c = root_r[apart], root_c[apart]
        low = np.minimum(root_r, root_c)
        np.minimum.at(labels, root_r, low)
        np.minimum.at(labels, root_c, low)
        while not np.array_equal(jumped := labels[labels], labels):
            labels = jumped
    return labels


def _identity_width(graph: ChannelGraph, comp: set[Dim], sizes: dict[Dim, int],
                    extra_by_dim: dict[Dim, list]) -> int | None:  # fmt: skip
    """n when every member of ``comp`` has n positions and every relation between them (the
    rules' and the chosen factors') maps position p to position p for all p
    (``RuleContext.same``, a factor beside 1s: one array, 0..n-1, on both sides), so the
    canonical channels are 0..n-1 in every member; None otherwise (the component's positions
    are then joined by connected components)."""
    widths = set(sizes.values())
    if len(widths) != 1:
        return None
    n = widths.pop()
    edges = graph.graph.edges
    relations = [rel for a, b in edges(comp) for rel in edges[a, b]["relations"]]
    relations += [rel[1:] for d in comp for rel in extra_by_dim.get(d, [])]
    for _, a_pos, b_pos in relations:
        if a_pos is not b_pos or a_pos.size != n or (n and not (
                a_pos[0] == 0 and a_pos[-1] == n - 1 and (np.diff(a_pos) == 1).all())):  # fmt: skip
            return None
    return n


def _unique(reasons: list[Reason]) -> list[Reason]:
    return list(dict.fromkeys(reasons))
