"""LSTM, GRU and RNN (torch exports): the hidden width is a prunable group spanning the
packed gates, the recurrent weights, the states and the outputs; the oracle passes and
``hidden_size`` is rewritten."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch

import onnxprune
from graphs import assert_exact, run


class Recurrent(torch.nn.Module):
    """Linear(12 -> 16) -> ReLU -> two-layer recurrent net (hidden 24) -> Linear(-> 5)."""

    def __init__(self, cell: str, bidirectional: bool, batch_first: bool) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(12, 16)
        self.rnn = getattr(torch.nn, cell)(16, 24, num_layers=2, bidirectional=bidirectional,
                                           batch_first=batch_first)  # fmt: skip
        self.head = torch.nn.Linear(24 * (2 if bidirectional else 1), 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(torch.relu(self.proj(x)))
        return self.head(y)


class CRNN(torch.nn.Module):
    """An OCR recogniser's shape: convolutions over a text line, columns as a sequence, a
    bidirectional LSTM, per-column class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2), torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(64, 64, (16, 1)), torch.nn.ReLU())  # height 16 -> 1  # fmt: skip
        self.lstm = torch.nn.LSTM(64, 48, bidirectional=True, batch_first=True)
        self.classes = torch.nn.Linear(96, 37)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        columns = self.features(image).squeeze(2).permute(0, 2, 1)  # [batch, width, 64]
        y, _ = self.lstm(columns)
        return self.classes(y)


def export(net: torch.nn.Module, example: torch.Tensor, dynamic: dict) -> onnx.ModelProto:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (example,), buffer, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": dynamic, "y": dynamic},
                          opset_version=17)  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
def test_recurrent_hidden_width_prunes_exactly(cell, bidirectional, batch_first):
    torch.manual_seed(0)
    net = Recurrent(cell, bidirectional, batch_first)
    example = torch.randn(2, 7, 12) if batch_first else torch.randn(7, 2, 12)
    proto = export(net, example, {0: "batch", 1: "steps"} if batch_first
                   else {0: "steps", 1: "batch"})  # fmt: skip
    assert cell in {n.op_type for n in proto.graph.node}
    analysis = onnxprune.analyze(proto)
    assert sorted(g.width for g in analysis.groups if g.exact) == [16, 24]
    feeds = [{"x": np.random.default_rng(s).standard_normal(shape).astype(np.float32)}
             for s, shape in enumerate([example.shape, (3, 11, 12)])]  # fmt: skip
    result = onnxprune.prune(proto, ratio=0.5, inputs=feeds)
    assert_exact(result)
    recurrent = [n for n in result.model.graph if n.op_type == cell]
    assert {n.attributes["hidden_size"].value for n in recurrent} == {12}
    before, after = run(proto, feeds[1])[0], run(result.to_proto(), feeds[1])[0]
    assert before.shape == after.shape and not np.allclose(before, after)


def test_a_crnn_loses_a_fifth_of_its_parameters_at_ratio_0_3_exactly():
    proto = export(CRNN(), torch.randn(1, 1, 32, 100), {0: "batch", 3: "width"})
    result = onnxprune.prune(proto, ratio=0.3)
    assert_exact(result)
    assert result.cost_after.params <= 0.8 * result.cost_before.params
    lstm = next(n for n in result.model.graph if n.op_type == "LSTM")
    assert lstm.attributes["hidden_size"].value == 48 - int(48 * 0.3)
