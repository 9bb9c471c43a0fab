"""onnx-graphsurgeon, the graph editor of TensorRT pipelines: a graph edited there is
analysed and pruned as it stands (the oracle passes), and the pruned model comes back as a
graph to go on editing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

import onnxprune
from graphs import assert_exact

DIGITS = Path(__file__).resolve().parent.parent / "models" / "digits_cnn.onnx"


def _edited() -> gs.Graph:
    """The digits CNN edited as a TensorRT user would: input renamed and given a named batch
    dim, a softmax appended to the logits, constants folded, dead nodes removed."""
    graph = gs.import_onnx(onnx.load(DIGITS))
    graph.inputs[0].name = "images"
    graph.inputs[0].shape = ["N", *graph.inputs[0].shape[1:]]
    logits = graph.outputs[0]
    probs = gs.Variable("probs", dtype=np.float32)
    graph.nodes.append(gs.Node("Softmax", name="softmax", attrs={"axis": 1},
                               inputs=[logits], outputs=[probs]))  # fmt: skip
    graph.outputs = [probs]
    graph.fold_constants().cleanup().toposort()
    return graph


def test_an_edited_graph_prunes_and_comes_back_as_a_graph():
    graph = _edited()
    analysis = onnxprune.analyze(graph)
    assert len(analysis.prunable) == 4
    result = onnxprune.prune(graph, ratio=0.5)
    assert_exact(result)
    back = result.to_graphsurgeon()
    assert isinstance(back, gs.Graph)
    assert [t.name for t in back.inputs] == ["images"] and back.outputs[0].name == "probs"
    convs = [n for n in back.nodes if n.op == "Conv"]
    assert convs[0].inputs[1].values.shape[0] == 16  # 32 channels -> 16
    session = ort.InferenceSession(gs.export_onnx(back).SerializeToString(),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    probs = session.run(None, {"images": np.zeros((3, 1, 8, 8), np.float32)})[0]
    assert probs.shape == (3, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
