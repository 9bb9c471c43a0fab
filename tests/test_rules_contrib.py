"""onnxruntime contrib attention ops (com.microsoft): whole heads prune, num_heads rewritten."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

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
