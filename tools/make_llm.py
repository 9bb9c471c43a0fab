"""Build large decoder-only language models as ONNX with external data, for the scale benchmark.

Two kinds, both with random weights and cached outside the repository
(``$ONNXPRUNE_LLM_CACHE``, default ``~/.cache/onnxprune/llm``):

- ``shaped``: a Llama-shaped decoder written directly with onnx-ir (token embedding, per layer
  RMSNorm -> q/k/v MatMuls -> multi-head attention -> o MatMul -> residual, RMSNorm -> SwiGLU
  gate/up/down MatMuls -> residual; final RMSNorm and LM head). Weights are generated one tensor
  at a time while the data file is written, so building it needs no more memory than the
  largest tensor. Default: hidden 2048, 18 layers, 32 heads, intermediate 5632, vocab 32000
  (1.06B parameters, 4.2 GB).
- ``llama``: ``transformers.LlamaForCausalLM`` (RoPE, grouped-query attention, SwiGLU, RMSNorm)
  at the TinyLlama-1.1B shape (hidden 2048, 22 layers, 32 heads, 4 KV heads, intermediate 5632)
  with random weights, exported by the torch exporter with external data (no KV cache; inputs
  ``input_ids`` [batch, sequence]).

Usage: ``python tools/make_llm.py shaped`` prints the path of the model (building it once).
``--layers``/``--hidden``... make smaller variants (tests use a 2-layer one).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper

CACHE = Path(os.environ.get("ONNXPRUNE_LLM_CACHE", Path.home() / ".cache/onnxprune/llm"))
SHAPES = {
    "shaped": {"hidden": 2048, "layers": 18, "heads": 32, "kv_heads": 32, "intermediate": 5632,
               "vocab": 32000},
    "llama": {"hidden": 2048, "layers": 22, "heads": 32, "kv_heads": 4, "intermediate": 5632,
              "vocab": 32000},
}  # fmt: skip


def _folder(kind: str, shape: dict) -> Path:
    tag = "-".join(f"{k[0]}{v}" for k, v in sorted(shape.items()))
    return CACHE / f"{kind}-{tag}"


def _random(name: str, shape: tuple[int, ...], scale: float, seed: int) -> ir.LazyTensor:
    """A float32 tensor of N(0, scale²) values made when it is written (seeded per tensor)."""

    def make() -> ir.Tensor:
        rng = np.random.default_rng(seed)
        return ir.tensor(rng.standard_normal(shape, dtype=np.float32) * np.float32(scale),
                         name=name)  # fmt: skip

    return ir.LazyTensor(make, dtype=ir.DataType.FLOAT, shape=ir.Shape(shape), name=name)


def build_shaped(path: Path, hidden: int, layers: int, heads: int, kv_heads: int,
                 intermediate: int, vocab: int) -> None:  # fmt: skip
    """Write the Llama-shaped decoder (kv_heads must equal heads: plain multi-head attention)."""
    if kv_heads != heads:
        raise SystemExit("the shaped model has plain multi-head attention: kv_heads == heads")
    head = hidden // heads
    nodes: list[onnx.NodeProto] = []
    weights: dict[str, tuple[tuple[int, ...], float]] = {}
    small: list[onnx.TensorProto] = [
        helper.make_tensor("eps", TensorProto.FLOAT, [], [1e-5]),
        helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
        helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0 / math.sqrt(head)]),
        helper.make_tensor("heads_shape", TensorProto.INT64, [4], [0, 0, heads, head]),
        helper.make_tensor("merged_shape", TensorProto.INT64, [3], [0, 0, hidden]),
    ]

    def weight(name: str, shape: tuple[int, ...], scale: float = 0.02) -> str:
        weights[name] = (shape, scale)
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=f"{output}_{op}", **attrs))
        return output

    def rms_norm(x: str, prefix: str) -> str:
        sq = node("Pow", [x, "two"], f"{prefix}.sq")
        mean = node("ReduceMean", [sq], f"{prefix}.mean", axes=[-1], keepdims=1)
        root = node("Sqrt", [node("Add", [mean, "eps"], f"{prefix}.var")], f"{prefix}.std")
        normed = node("Div", [x, root], f"{prefix}.normed")
        return node("Mul", [normed, weight(f"{prefix}.weight", (hidden,), 0.0)], f"{prefix}.out")

    x = node("Gather", [weight("embed", (vocab, hidden)), "input_ids"], "embedded")
    for i in range(layers):
        p = f"layers.{i}"
        h = rms_norm(x, f"{p}.input_norm")
        split = {}
        for part in "qkv":
            projected = node("MatMul", [h, weight(f"{p}.{part}_proj", (hidden, hidden))],
                             f"{p}.{part}")  # fmt: skip
            shaped = node("Reshape", [projected, "heads_shape"], f"{p}.{part}.heads")
            perm = [0, 2, 3, 1] if part == "k" else [0, 2, 1, 3]
            split[part] = node("Transpose", [shaped], f"{p}.{part}.t", perm=perm)
        scores = node("MatMul", [split["q"], split["k"]], f"{p}.scores")
        scaled = node("Mul", [scores, "scale"], f"{p}.scaled")
        probs = node("Softmax", [scaled], f"{p}.probs", axis=-1)
        context = node("MatMul", [probs, split["v"]], f"{p}.context")
        merged = node("Reshape", [node("Transpose", [context], f"{p}.context.t",
                                       perm=[0, 2, 1, 3]), "merged_shape"], f"{p}.merged")  # fmt: skip
        attn = node("MatMul", [merged, weight(f"{p}.o_proj", (hidden, hidden))], f"{p}.attn")
        x = node("Add", [x, attn], f"{p}.resid1")
        h = rms_norm(x, f"{p}.post_norm")
        gate = node("MatMul", [h, weight(f"{p}.gate_proj", (hidden, intermediate))], f"{p}.gate")
        up = node("MatMul", [h, weight(f"{p}.up_proj", (hidden, intermediate))], f"{p}.up")
        silu = node("Mul", [gate, node("Sigmoid", [gate], f"{p}.sig")], f"{p}.silu")
        act = node("Mul", [silu, up], f"{p}.act")
        down = node("MatMul", [act, weight(f"{p}.down_proj", (intermediate, hidden))],
                    f"{p}.down")  # fmt: skip
        x = node("Add", [x, down], f"{p}.resid2")
    h = rms_norm(x, "final_norm")
    node("MatMul", [h, weight("lm_head", (hidden, vocab))], "logits")
    declared = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
                for name, (shape, _) in weights.items()]  # fmt: skip
    graph = helper.make_graph(
        nodes, "llm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         *declared],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       ["batch", "sequence", vocab])],
        small,
    )  # fmt: skip
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    for seed, value in enumerate(list(model.graph.inputs[1:])):
        shape, scale = weights[value.name]
        value.const_value = (_random(value.name, shape, scale, seed) if scale else
                             ir.tensor(np.ones(shape, dtype=np.float32), name=value.name))  # fmt: skip
        model.graph.inputs.remove(value)
        model.graph.register_initializer(value)
    ir.save(model, path, external_data=f"{path.name}.data")


def build_llama(path: Path, hidden: int, layers: int, heads: int, kv_heads: int,
                intermediate: int, vocab: int) -> None:  # fmt: skip
    """Export ``transformers.LlamaForCausalLM`` with random weights (torch exporter)."""
    import torch
    import transformers

    config = transformers.LlamaConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, intermediate_size=intermediate, vocab_size=vocab,
        max_position_embeddings=2048, use_cache=False, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02)
        for buffer_name, buffer in model.named_buffers():
            if "inv_freq" in buffer_name:
                dim = buffer.numel() * 2
                base = getattr(config, "rope_theta", 10000.0)
                buffer.copy_(1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))

    class Logits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, use_cache=False).logits

    ids = torch.randint(0, vocab, (1, 16))
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("sequence", max=2048)
    with torch.no_grad():
        program = torch.onnx.export(Logits(model), (ids,), dynamo=True, input_names=["input_ids"],
                                    output_names=["logits"],
                                    dynamic_shapes={"input_ids": {0: batch, 1: seq}},
                                    external_data=True, optimize=True)  # fmt: skip
    del model
    program.save(str(path), external_data=True)


def make(kind: str, **shape: int) -> Path:
    """The cached model of ``kind`` at ``shape`` (SHAPES[kind] updated), built once."""
    full = dict(SHAPES[kind]) | {k: v for k, v in shape.items() if v is not None}
    folder = _folder(kind, full)
    path = folder / "model.onnx"
    if path.exists():
        return path
    building = folder.with_name(folder.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    (build_shaped if kind == "shaped" else build_llama)(building / "model.onnx", **full)
    os.replace(building, folder)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(SHAPES))
    for key in SHAPES["shaped"]:
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, dest=key)
    args = vars(parser.parse_args(argv))
    path = make(args.pop("kind"), **args)
    size = sum(f.stat().st_size for f in path.parent.iterdir())
    print(f"{path}  ({size / 2**30:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
