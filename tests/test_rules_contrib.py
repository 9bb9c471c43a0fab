"""onnxruntime contrib attention ops (com.microsoft): whole heads prune, num_heads rewritten."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

import onnxprune
from graphs import assert_prunes_exactly, model, weight

MS = {"com.microsoft": 1}


def _attrs(result, op: str) -> list[dict]:
    return [{a.name: helper.get_attribute_value(a) for a in n.attribute}
            for n in result.to_proto().graph.node if n.op_type == op]  # fmt: skip


def _projections(widths: dict[str, int], hidden: int) -> tuple[list, dict]:
    nodes = [helper.make_node("MatMul", ["x", f"w{k}"], [k], name=f"{k}_proj") for k in widths]
    return nodes, {f"w{k}": weight(hidden, n) for k, n in widths.items()}


def test_multi_head_attention_prunes_whole_heads():
    hidden, heads, d = 16, 4, 4
    nodes, inits = _projections({"q": heads * d, "k": heads * d, "v": heads * d}, hidden)
    nodes += [
        helper.make_node("MultiHeadAttention", ["q", "k", "v", "bqkv"], ["a"], name="mha",
                         domain="com.microsoft", num_heads=heads),
        helper.make_node("MatMul", ["a", "wo"], ["y"], name="o_proj"),
    ]  # fmt: skip
    inits |= {"bqkv": weight(3 * heads * d), "wo": weight(heads * d, hidden)}
    proto = model(nodes, {"x": [1, 5, hidden]}, {"y": [1, 5, hidden]}, inits, extra_opsets=MS,
                  value_info={"a": [1, 5, heads * d]})  # fmt: skip
    result = assert_prunes_exactly(proto, 0.5)
    assert _attrs(result, "MultiHeadAttention") == [{"num_heads": 2}]
    bias = next(t for t in result.to_proto().graph.initializer if t.name == "bqkv")
    assert list(bias.dims) == [3 * 2 * d]


def test_fused_attention_packed_qkv_prunes_whole_heads():
    hidden, heads, d = 12, 3, 4
    nodes = [
        helper.make_node("Attention", ["x", "wqkv", "bqkv"], ["a"], name="attn",
                         domain="com.microsoft", num_heads=heads),
        helper.make_node("MatMul", ["a", "wo"], ["y"], name="o_proj"),
    ]  # fmt: skip
    inits = {"wqkv": weight(hidden, 3 * heads * d), "bqkv": weight(3 * heads * d),
             "wo": weight(heads * d, hidden)}  # fmt: skip
    proto = model(nodes, {"x": [2, 5, hidden]}, {"y": [2, 5, hidden]}, inits, extra_opsets=MS,
                  value_info={"a": [2, 5, heads * d]})  # fmt: skip
    result = assert_prunes_exactly(proto, 0.34)
    assert _attrs(result, "Attention") == [{"num_heads": 2}]


def test_group_query_attention_prunes_kv_heads_with_their_query_heads():
    hidden, heads, kv_heads, d, seq = 16, 4, 2, 8, 5
    nodes, inits = _projections({"q": heads * d, "k": kv_heads * d, "v": kv_heads * d}, hidden)
    nodes += [
        helper.make_node("GroupQueryAttention",
                         ["q", "k", "v", "", "", "seqlens_k", "total_len"], ["a", "pk", "pv"],
                         name="gqa", domain="com.microsoft", num_heads=heads,
                         kv_num_heads=kv_heads),
        helper.make_node("MatMul", ["a", "wo"], ["y"], name="o_proj"),
    ]  # fmt: skip
    inits |= {"wo": weight(heads * d, hidden)}
    proto = model(nodes, {"x": [1, seq, hidden]}, {"y": [1, seq, hidden]}, inits,
                  extra_opsets=MS, value_info={"a": [1, seq, heads * d]})  # fmt: skip
    proto.graph.initializer.extend([
        numpy_helper.from_array(np.array([seq - 1], np.int32), "seqlens_k"),
        numpy_helper.from_array(np.array(seq, np.int32), "total_len"),
    ])  # fmt: skip
    result = assert_prunes_exactly(proto, 0.5)
    attrs = _attrs(result, "GroupQueryAttention")[0]
    assert (attrs["num_heads"], attrs["kv_num_heads"]) == (2, 1)
    wq = next(t for t in result.to_proto().graph.initializer if t.name == "wq")
    assert list(wq.dims) == [hidden, 2 * d]
    assert onnx.checker.check_model(result.to_proto()) is None


def test_block_quantized_matmul_is_counted_and_blocks_its_channels_by_name():
    """com.microsoft MatMulNBits (made by onnxruntime's own 4-bit quantizer) has no channel
    rule: removing input rows would move the quantization blocks. What reads or feeds it is
    blocked with the op named; its K x N weight and MACs count as the MatMul's; the rest of
    the model prunes exactly."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from onnxprune.metrics import model_cost, parameter_counts

    names = ["fc1", "fc2", "fc3"]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="fc2"),
             helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
             helper.make_node("MatMul", ["r2", "w3"], ["y"], name="fc3")]  # fmt: skip
    proto = model(nodes, {"x": [2, 64]}, {"y": [2, 64]},
                  {"w1": weight(64, 64), "w2": weight(64, 64), "w3": weight(64, 64)})  # fmt: skip
    quantizer = MatMulNBitsQuantizer(onnx.ModelProto.FromString(proto.SerializeToString()),
                                     block_size=32, is_symmetric=True,
                                     nodes_to_exclude=names[:2])  # fmt: skip
    quantizer.process()
    quantized = quantizer.model.model
    packed = next(n for n in quantized.graph.node if n.op_type == "MatMulNBits")
    assert parameter_counts(quantized)[packed.input[1]] == 64 * 64
    assert model_cost(quantized).macs == model_cost(proto).macs

    blocked = [r for g in onnxprune.analyze(quantized).groups for r in g.blocked
               if "MatMulNBits" in r.op_type]  # fmt: skip
    assert blocked and all("no channel rule" in r.text for r in blocked)
    result = assert_prunes_exactly(quantized, 0.5)
    kept = {n.op_type: n for n in result.to_proto().graph.node}
    assert kept["MatMulNBits"].input == packed.input  # untouched: it still reads 64 rows
    assert result.cost_after.params < result.cost_before.params
