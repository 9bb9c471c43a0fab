"""Memory pages of the arrays a prune of a large model allocates: small pages, not
transparent huge pages.

Rule: while a model with at least ``LARGE`` bytes of weights held in memory (not external data,
which stays memory-mapped and is sliced one tensor at a time) is pruned or saved, numpy does not
ask the kernel for transparent huge pages for its large arrays (numpy's
``madvise(MADV_HUGEPAGE)``, on by default on Linux); the setting is restored afterwards.
Every weight is touched once or twice (read, scored, sliced, written), so fewer TLB misses
buy little, while a huge-page fault on fragmented memory waits for the kernel to compact it
(``compact_stall`` in /proc/vmstat): vgg11_bn's (507 MB) ``--no-verify`` prune and save took
0.46-2.16 s over six runs with huge pages (median 1.05 s), 0.72-0.82 s without (median 0.79 s);
verified, 1.23-2.21 s (median 1.73 s) and 1.80-1.97 s (1.84 s). Smaller models keep them:
there the faults they save outweigh the waits (resnet18 0.075 s with, 0.084 s without;
resnet50 0.157 s and 0.177 s).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np

#: Models with at least this many bytes of weights are pruned and saved with small pages.
LARGE = 256 << 20


def _setter() -> Callable[[bool], bool] | None:
    """numpy's switch (returns the previous setting); None where this numpy has none."""
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    return getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)


@contextlib.contextmanager
def small_pages(nbytes: int) -> Iterator[None]:
    """numpy's huge-page advice off while a model of ``nbytes`` weight bytes (at least
    ``LARGE``) is worked on (module docstring)."""
    switch = _setter() if nbytes >= LARGE else None
    if switch is None:
        yield
        return
    before = switch(False)
    try:
        yield
    finally:
        switch(before)
