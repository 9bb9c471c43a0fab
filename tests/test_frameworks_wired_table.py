"""wired_table_rec 0.0.3 (PyPI, Apache-2.0): a table-structure detector whose wheel ships its
ONNX model, ``cycle_center_net_v1.onnx`` (CycleCenterNet on a DLA-34 backbone with IDA-up
upsampling; 72 MB), with a fully symbolic input ``[batch, 3, height, width]``.

Task, made here: ruled tables drawn with PIL at six sizes from 384x512 to 640x480 (2-6 rows,
2-5 columns at random positions, lines 1-3 px, numbers in the cells); the model's corner
heatmap (``hm`` channel 1, stride 4) is read as the package does (sigmoid, 3x3 peak, > 0.3)
and judged by the F1 score of corners found within 12 px of a drawn grid corner. The prune
is verified at two sizes the calibration did not fix (448x640 and 640x480) and the pruned
model runs at a third."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import ocr
import onnxprune
from accuracy import check_accuracy
from graphs import assert_exact

if find_spec("wired_table_rec") is None:
    pytest.skip("wired_table_rec not installed (make test installs its wheel)",
                allow_module_level=True)  # fmt: skip

MODEL = (Path(find_spec("wired_table_rec").submodule_search_locations[0]) / "models"
         / "cycle_center_net_v1.onnx")  # fmt: skip
MEAN = np.array([0.408, 0.447, 0.470], np.float32)
STD = np.array([0.289, 0.274, 0.278], np.float32)
SIZES = [(384, 512), (512, 384), (448, 640), (512, 512), (576, 448), (640, 480)]


def table(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(model input 1x3xHxW, drawn grid corners as (x, y) pixels) of one ruled table."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    h, w = SIZES[seed % len(SIZES)]
    rows, cols = int(rng.integers(2, 7)), int(rng.integers(2, 6))
    image = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(image)
    x0, y0 = int(rng.integers(10, w // 6)), int(rng.integers(10, h // 6))
    x1, y1 = w - int(rng.integers(10, w // 6)), h - int(rng.integers(10, h // 6))
    xs = np.sort(np.r_[x0, x1, rng.choice(np.arange(x0 + 30, x1 - 30), cols - 1, replace=False)])
    ys = np.sort(np.r_[y0, y1, rng.choice(np.arange(y0 + 25, y1 - 25), rows - 1, replace=False)])
    width = int(rng.integers(1, 4))
    for x in xs:
        draw.line([(x, y0), (x, y1)], fill="black", width=width)
    for y in ys:
        draw.line([(x0, y), (x1, y)], fill="black", width=width)
    for i in range(rows):
        for j in range(cols):
            if ys[i + 1] - ys[i] > 20 and xs[j + 1] - xs[j] > 40:
                draw.text((xs[j] + 4, ys[i] + 3), str(rng.integers(0, 9999)), fill="black",
                          font=ocr._font(i + j, 12))  # fmt: skip
    bgr = np.asarray(image)[:, :, ::-1] / 255.0  # the package feeds OpenCV's BGR
    x = ((bgr - MEAN) / STD).astype(np.float32).transpose(2, 0, 1)[None]
    return x, np.array([(px, py) for px in xs for py in ys], dtype=float)


def corners(heatmap: np.ndarray) -> np.ndarray:
    """(x, y) pixels of the corner heatmap's 3x3 peaks above 0.3 after a sigmoid."""
    from numpy.lib.stride_tricks import sliding_window_view

    score = 1 / (1 + np.exp(-heatmap))
    padded = np.pad(score, 1, constant_values=-1)
    peak = sliding_window_view(padded, (3, 3)).max(axis=(2, 3))
    return np.argwhere((score == peak) & (score > 0.3))[:, ::-1] * 4.0


def corner_f1(model, data) -> float:
    """F1 of found corners against drawn ones (a match within 12 px) over ``data``."""
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    tp = fp = fn = 0
    for x, truth in data:
        found = corners(session.run(["hm"], {"input": x})[0][0, 1])
        dist = np.hypot(found[:, None, 0] - truth[None, :, 0],
                        found[:, None, 1] - truth[None, :, 1])
        hit = dist.min(axis=0) < 12 if len(found) else np.zeros(len(truth), bool)
        fp += int((dist.min(axis=1) >= 12).sum()) if len(found) else 0
        tp, fn = tp + int(hit.sum()), fn + int((~hit).sum())
    return 2 * tp / (2 * tp + fp + fn)


@pytest.fixture(scope="module")
def tables():
    return [table(100 + i) for i in range(24)]


def test_the_table_detector_prunes_to_half_its_macs_and_keeps_finding_corners(tables):
    original = corner_f1(MODEL, tables)
    calibration = [{"input": table(i)[0]} for i in range(8)]
    checks = [{"input": tables[4][0]}, {"input": tables[1][0]}]  # 448x640, 640x480
    result = onnxprune.prune(MODEL, target_macs=0.5, calibration=calibration, inputs=checks)
    assert_exact(result)
    assert [s["input"] for s in result.verification.input_shapes] == [[1, 3, 448, 640],
                                                                       [1, 3, 640, 480]]
    assert result.cost_after.macs <= 0.5 * result.cost_before.macs
    pruned = result.to_proto()
    # the pruned model keeps the symbolic input and runs at a size nobody used above
    session = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"])
    hm = session.run(["hm"], {"input": table(7)[0][:, :, :320, :320]})[0]
    assert hm.shape == (1, 2, 80, 80)
    f1 = corner_f1(pruned, tables)
    print(f"corner F1: original {original:.4f}, 50% MACs calibrated {f1:.4f}; params "
          f"{result.cost_after.params / result.cost_before.params:.1%}")  # fmt: skip
    check_accuracy("wired_table_original", original)
    check_accuracy("wired_table_calibrated_50", f1)
