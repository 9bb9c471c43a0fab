"""Pages of a large model's arrays: numpy's huge-page advice off while a model holding
``pages.LARGE`` bytes of weights in memory is pruned or saved, and as it was afterwards."""

from __future__ import annotations

import onnx

from onnxprune.model_io import model_nbytes


def test_a_large_model_works_with_small_pages_and_the_setting_comes_back():
    """numpy's huge-page advice is off inside ``small_pages`` for ``LARGE`` bytes and more,
    untouched below, and as it was afterwards (onnxprune/pages.py)."""
    from onnxprune import pages

    switch = pages._setter()
    before = switch(True)
    try:
        with pages.small_pages(pages.LARGE):
            inside = switch(False)
        after = switch(True)
        with pages.small_pages(pages.LARGE - 1):
            small = switch(True)
    finally:
        switch(before)
    assert (inside, after, small) == (False, True, True)


def test_prune_and_save_size_their_pages_by_the_model(tmp_path, monkeypatch):
    import contextlib

    from test_allocation import mlp

    import onnxprune
    import onnxprune.api as api
    from graphs import feeds

    sizes = []

    @contextlib.contextmanager
    def recorded(nbytes):
        sizes.append(nbytes)
        yield

    monkeypatch.setattr(api, "small_pages", recorded)
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp(40), path)
    result = onnxprune.prune(path, ratio=0.5, inputs=feeds(mlp(40)))
    result.save(tmp_path / "small.onnx")
    assert sizes == [path.stat().st_size, model_nbytes(result.model)]
    # external data stays mapped: only the .onnx file itself is read into memory, and the
    # sliced tensors are written one at a time
    sizes.clear()
    external = tmp_path / "ext" / "mlp.onnx"
    external.parent.mkdir()
    onnx.save(mlp(40), external, save_as_external_data=True, size_threshold=0)
    result = onnxprune.prune(external, ratio=0.5, inputs=feeds(mlp(40)))
    result.save(tmp_path / "ext" / "small.onnx")
    assert sizes == [external.stat().st_size, 0]
    assert external.stat().st_size < model_nbytes(result.original)
