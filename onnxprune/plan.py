"""The removal plan: which canonical channels of which groups go, and what that means for
every tensor (kept positions per member dim) and every consumer (positions to mask).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxprune.blocks import Block
from onnxprune.channel_graph import Consumer, Dim
from onnxprune.errors import UsageError
from onnxprune.groups import Group


@dataclass(frozen=True)
class Mask:
    """Zero positions ``removed`` of axis ``consumer.axis`` of the consumer's input."""

    consumer: Consumer
    size: int
    removed: np.ndarray


@dataclass
class RemovalPlan:
    """Removed atoms per group, and the resulting kept positions of every shrinking dim."""

    removed: dict[int, np.ndarray] = field(default_factory=dict)
    kept: dict[Dim, np.ndarray] = field(default_factory=dict)
    old_sizes: dict[Dim, int] = field(default_factory=dict)
    masks: list[Mask] = field(default_factory=list)
    #: Mask index -> values the removed channels are replaced by (bias compensation).
    fills: dict[int, np.ndarray] = field(default_factory=dict)
    #: Initializer name -> new value of the same shape (least-squares refit of kept weights).
    weight_updates: dict[str, np.ndarray] = field(default_factory=dict)
    #: Removed residual branches: block id -> (sum node, index of the sum's kept input).
    blocks: dict[int, tuple[str, int]] = field(default_factory=dict)

    @classmethod
    def build(cls, groups: list[Group], removed: dict[int, np.ndarray],
              blocks: Iterable[Block] = ()) -> RemovalPlan:  # fmt: skip
        plan = cls(blocks={b.id: (b.add, b.skip_index) for b in blocks})
        by_id = {g.id: g for g in groups}
        for gid, atoms in removed.items():
            atoms = np.unique(np.asarray(atoms, dtype=np.int64))
            if atoms.size == 0:
                continue
            group = by_id[gid]
            if group.blocked:
                raise ValueError(f"group {gid} is blocked and cannot be pruned")
            plan.removed[gid] = atoms
            removed_atom = np.zeros(group.n_atoms, dtype=bool)
            removed_atom[atoms] = True
            split: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # by array: members share them
            for dim, atom_of in group.atom_of.items():
                kept, gone = _split(removed_atom, atom_of, split)
                if gone.size:
                    plan.kept[dim] = kept
                    plan.old_sizes[dim] = atom_of.size
            for dim, consumer in group.consumers:
                if dim.is_virtual or dim not in group.atom_of:
                    continue
                gone = _split(removed_atom, group.atom_of[dim], split)[1]
                if gone.size:
                    plan.masks.append(Mask(consumer, group.atom_of[dim].size, gone))
        return plan

    def __bool__(self) -> bool:
        return bool(self.removed or self.blocks)

    def new_size(self, tensor: str, axis: int, old: int | str | None) -> int | str | None:
        kept = self.kept.get(Dim(tensor, axis))
        return old if kept is None else int(kept.size)

    def sliced(self, tensor: str, array: np.ndarray,
               positions: Mapping[int, np.ndarray] | None = None) -> np.ndarray:  # fmt: skip
        """``array`` (tensor ``tensor`` at its original size) at the kept positions of each
        shrunk axis (``array`` itself where none is); ``positions`` replaces the kept positions
        of some axes."""
        for axis in range(array.ndim):
            kept = (positions or {}).get(axis, self.kept.get(Dim(tensor, axis)))
            if kept is not None:
                array = np.take(array, kept, axis=axis)
        return array

    def by_tensor(self) -> dict[str, dict[int, np.ndarray]]:
        out: dict[str, dict[int, np.ndarray]] = {}
        for dim, kept in self.kept.items():
            out.setdefault(dim.tensor, {})[dim.axis] = kept
        return out

    def to_dict(self) -> dict:
        """Removed atoms per group and compensation fills per mask, as plain data."""
        return {"removed": {str(g): a.tolist() for g, a in self.removed.items()},
                "fills": {str(i): v.tolist() for i, v in self.fills.items()},
                "refit_weights": sorted(self.weight_updates),
                "blocks": {str(k): {"add": a, "skip_input": i}
                           for k, (a, i) in sorted(self.blocks.items())}}  # fmt: skip

    @staticmethod
    def read_fills(data: dict) -> dict[int, np.ndarray]:
        """The compensation fills of a plan written by :meth:`to_dict`."""
        try:
            return {int(k): np.asarray(v, dtype=np.float64)
                    for k, v in (data.get("fills") or {}).items()}  # fmt: skip
        except (TypeError, ValueError, AttributeError) as exc:
            raise UsageError(f"the plan's 'fills' are not numbers per mask ({exc})") from exc

    def to_json(self, path: str | Path) -> None:
        """Write the plan (re-appliable to the same model with ``--plan``)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))


def _split(removed_atom: np.ndarray, atom_of: np.ndarray,
           seen: dict[int, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(kept, removed) positions of a member whose position p is atom ``atom_of[p]``,
    computed once per array (``seen``)."""
    if id(atom_of) not in seen:
        gone = removed_atom[atom_of]
        seen[id(atom_of)] = np.flatnonzero(~gone), np.flatnonzero(gone)
    return seen[id(atom_of)]


def dropped_blocks(data: Mapping, blocks: Iterable[Block]) -> list[Block]:
    """The blocks a plan's data drops (``blocks``: block id -> {add, skip_input}), each one of
    this model's removable ``blocks`` with the same sum and kept input; UsageError naming the
    first that is not."""
    by_id = {b.id: b for b in blocks}
    dropped = []
    for key, entry in (data.get("blocks") or {}).items():
        block = by_id.get(int(key))
        if block is None or (block.add, block.skip_index) != (entry.get("add"),
                                                              entry.get("skip_input")):  # fmt: skip
            raise UsageError(f"the plan drops block {key} (sum '{entry.get('add')}'), which "
                             "this model (with these options) does not have as a removable "
                             "block")  # fmt: skip
        dropped.append(block)
    return dropped


def read_plan(plan: str | Path | Mapping) -> Mapping:
    """A plan's data from a file written by ``--plan-out`` or a dict; UsageError otherwise."""
    if isinstance(plan, str | Path):
        path = Path(plan)
        if not path.is_file():
            raise UsageError(f"plan file '{path}' does not exist or is not a file")
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"plan file '{path}' is not JSON ({exc}); give a file written "
                             "by --plan-out") from exc  # fmt: skip
    else:
        data = plan
    if not isinstance(data, Mapping) or not isinstance(data.get("removed"), Mapping):
        raise UsageError("the plan has no 'removed' mapping (group id -> channels); give a "
                         "file written by --plan-out")  # fmt: skip
    blocks = data.get("blocks", {})
    if not isinstance(blocks, Mapping) or not all(
            str(k).isdigit() and isinstance(v, Mapping) and isinstance(v.get("add"), str)
            and v.get("skip_input") in (0, 1) for k, v in blocks.items()):  # fmt: skip
        raise UsageError("the plan's 'blocks' are not block id -> {add, skip_input}; give a "
                         "file written by --plan-out")  # fmt: skip
    for key, atoms in data["removed"].items():
        if not str(key).isdigit() or not isinstance(atoms, list) or not all(
                isinstance(a, int) and not isinstance(a, bool) for a in atoms):  # fmt: skip
            raise UsageError(f"the plan's entry for group '{key}' is not a list of channel "
                             f"numbers: {str(atoms)[:80]}")  # fmt: skip
    return data
