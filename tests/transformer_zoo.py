"""Transformer architectures exported to ONNX once per exporter, cached outside the repo.

A plain helper for the transformer zoo tests, like :mod:`zoo`. Models are built from configs
with seeded random weights (no downloads) and wrapped so that every export has the same
calling convention: named numpy inputs in, the first output tensor out. Text models take
``input_ids`` and an all-ones ``attention_mask`` (transformers 5 needs an explicit mask for
export) with symbolic ``batch`` and ``sequence`` dims; vision models take ``pixel_values``
with a symbolic ``batch``. Per-layer widths are those of the named configs (bert-base: 768
hidden, 12 heads, 3072 MLP); depth and vocabulary are cut so that the suite stays small:
pruning, like the channel graph, is per layer, so two layers exercise every coupling.

Cache: ``zoo.cache_dir() / transformers-<version>_recipe-<RECIPE>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import zoo

__all__ = ["EXPORTERS", "MODELS", "RECIPE", "TransformerCase", "export", "feeds",
           "verification_feeds"]

RECIPE = 3
EXPORTERS = zoo.EXPORTERS
SEQUENCE = 8
VOCAB = 512


@dataclass
class TransformerCase:
    """How to build, feed and export one model."""

    build: Callable[[], Any]
    inputs: Callable[[int, int, int], dict[str, np.ndarray]]  # (batch, sequence, seed) -> feed
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    outputs: tuple[str, ...] = ("output",)
    #: Batch of the traced example (dynamic dims are traced at 2: torch.export specialises 1).
    batch: int = 2
    #: Why the export has no dynamic dims, when it has none.
    static_reason: str = ""


def _text_inputs(batch: int, sequence: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, VOCAB, (batch, sequence), dtype=np.int64),
            "attention_mask": np.ones((batch, sequence), dtype=np.int64)}  # fmt: skip


def _image_inputs(size: int) -> Callable[[int, int, int], dict[str, np.ndarray]]:
    def make(batch: int, sequence: int, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {"pixel_values": rng.standard_normal((batch, 3, size, size), dtype=np.float32)}

    return make


_TEXT_DYNAMIC = {"input_ids": {0: "batch", 1: "sequence"},
                 "attention_mask": {0: "batch", 1: "sequence"}}  # fmt: skip
_IMAGE_DYNAMIC = {"pixel_values": {0: "batch"}}


def _hf_model(config_cls: str, model_cls: str, config: dict, **kwargs: Any) -> Any:
    """A randomly initialised transformers model with eager attention."""
    import transformers

    cfg = getattr(transformers, config_cls)(**config)
    cfg._attn_implementation = "eager"
    return getattr(transformers, model_cls)(cfg, **kwargs)


# The wrappers differ only in forward's signature, which names the exported inputs.
def _hf(config_cls: str, model_cls: str, **config: Any) -> Callable[[], Any]:
    def build() -> Any:
        import torch

        class TextModel(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = _hf_model(config_cls, model_cls, config)

            def forward(self, input_ids, attention_mask):
                kwargs = {"use_cache": False} if "use_cache" in self.model.config else {}
                out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                 return_dict=False, **kwargs)
                return out[0]

        torch.manual_seed(0)
        return TextModel().eval()

    return build


def _hf_vision(config_cls: str, model_cls: str, **config: Any) -> Callable[[], Any]:
    def build() -> Any:
        import torch

        class VisionModel(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = _hf_model(config_cls, model_cls, config, add_pooling_layer=False)

            def forward(self, pixel_values):
                return self.model(pixel_values=pixel_values, return_dict=False)[0]

        torch.manual_seed(0)
        return VisionModel().eval()

    return build


def _pixels(model: Any) -> Any:
    """``model`` called as ``model(pixel_values)`` (the exporters match inputs by name)."""
    import torch

    class Pixels(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model(pixel_values)

    return Pixels().eval()


def _torchvision(builder: str, **kwargs: Any) -> Callable[[], Any]:
    def build() -> Any:
        import torch
        import torchvision

        torch.manual_seed(0)
        return _pixels(getattr(torchvision.models, builder)(weights=None, **kwargs))

    return build


def _torchvision_vit() -> Any:
    """torchvision's VisionTransformer with vit_b_16's layer (768 wide, 12 heads, 3072 MLP)."""
    import torch
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=12,
                            hidden_dim=768, mlp_dim=3072)  # fmt: skip
    torch.nn.init.normal_(vit.heads.head.weight, std=0.02)  # torchvision zero-initialises it
    return _pixels(vit)


_BERT_BASE = {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}
_SMALL_LLM = {"vocab_size": VOCAB, "hidden_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 256,
              "max_position_embeddings": 64, "tie_word_embeddings": False}  # fmt: skip

#: Model name -> how to build, feed and export it.
MODELS: dict[str, TransformerCase] = {
    "bert": TransformerCase(
        _hf("BertConfig", "BertModel", vocab_size=VOCAB, num_hidden_layers=2,
            max_position_embeddings=64, **_BERT_BASE),
        _text_inputs, _TEXT_DYNAMIC),
    "distilbert": TransformerCase(
        _hf("DistilBertConfig", "DistilBertModel", vocab_size=VOCAB, n_layers=2, dim=768,
            n_heads=12, hidden_dim=3072, max_position_embeddings=64),
        _text_inputs, _TEXT_DYNAMIC),
    "gpt2": TransformerCase(
        _hf("GPT2Config", "GPT2LMHeadModel", vocab_size=VOCAB, n_layer=2, n_embd=768,
            n_head=12, n_positions=64),
        _text_inputs, _TEXT_DYNAMIC),
    "llama": TransformerCase(_hf("LlamaConfig", "LlamaForCausalLM", **_SMALL_LLM),
                             _text_inputs, _TEXT_DYNAMIC),
    "qwen2": TransformerCase(_hf("Qwen2Config", "Qwen2ForCausalLM", **_SMALL_LLM),
                             _text_inputs, _TEXT_DYNAMIC),
    "vit": TransformerCase(
        _hf_vision("ViTConfig", "ViTModel", image_size=32, patch_size=8, num_hidden_layers=2,
                   **_BERT_BASE),
        _image_inputs(32), _IMAGE_DYNAMIC),
    "vit_b_16": TransformerCase(
        _torchvision_vit, _image_inputs(64), batch=1,
        static_reason="nn.MultiheadAttention reshapes (L, N, H*D) to (L, N*H, D): the heads "
        "share an axis with the batch, so only a static batch of 1 leaves them prunable"),
    "swin_t": TransformerCase(_torchvision("swin_t"), _image_inputs(64), _IMAGE_DYNAMIC),
}


def feeds(name: str, batch: int = 1, sequence: int = SEQUENCE, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for model ``name``: integer ids and an all-ones mask, or a normal image batch."""
    return MODELS[name].inputs(batch, sequence, seed)


def verification_feeds(name: str) -> list[dict[str, np.ndarray]]:
    """Feeds to verify model ``name`` on: one at the traced batch (1 where dims are dynamic),
    and for dynamic models a second batch and sequence length (3 x 5) through the same graph."""
    case = MODELS[name]
    out = [feeds(name, batch=case.batch if not case.dynamic else 1)]
    if case.dynamic:
        out.append(feeds(name, batch=3, sequence=5, seed=1))
    return out


def cache_dir() -> Path:
    version = metadata.version("transformers")
    return zoo.cache_dir() / f"transformers-{version}_recipe-{RECIPE}"


def _export_to(name: str, exporter: str, path: Path) -> None:
    import torch

    case = MODELS[name]
    model = case.build()
    # Dynamic dims are traced with sizes other than 0 and 1 (torch.export specialises those).
    example = {k: torch.from_numpy(v) for k, v in feeds(name, batch=case.batch).items()}
    names = list(example)
    with zoo.quiet() as log:
        try:
            if exporter == "torchscript":
                axes = dict(case.dynamic) | {o: {0: "batch"} for o in case.outputs
                                             if case.dynamic}
                torch.onnx.export(model, tuple(example.values()), str(path), dynamo=False,
                                  input_names=names, output_names=list(case.outputs),
                                  dynamic_axes=axes, opset_version=EXPORTERS[exporter])
            else:
                dims = {label: torch.export.Dim(label, min=2, max=64)
                        for axes in case.dynamic.values() for label in axes.values()}
                shapes = {k: {a: dims[label] for a, label in case.dynamic.get(k, {}).items()}
                          for k in names}
                torch.onnx.export(model, (), str(path), kwargs=example, dynamo=True,
                                  input_names=names, output_names=list(case.outputs),
                                  dynamic_shapes=shapes if dims else None, opset_version=EXPORTERS[exporter],
                                  external_data=False)
        except Exception as error:
            raise RuntimeError(f"{exporter} export of {name} failed: {error}; exporter output:\n"
                               f"{log.getvalue()[-4000:]}") from error  # fmt: skip


def export(name: str, exporter: str) -> Path:
    """Path of the cached export of transformer ``name`` (a key of :data:`MODELS`)."""
    if name not in MODELS:
        raise KeyError(f"unknown transformer zoo model '{name}'")
    return zoo.cached(f"{name}-{exporter}.onnx", lambda tmp: _export_to(name, exporter, tmp),
                      cache_dir())


def export_ort_optimized(name: str, exporter: str = "torchscript",
                         model_type: str = "bert") -> Path:  # fmt: skip
    """The export of ``name`` after ``onnxruntime.transformers.optimizer`` (``bert``: Attention,
    SkipLayerNormalization, BiasGelu, EmbedLayerNormalization, com.microsoft; ``gpt2`` on a
    Llama: SimplifiedLayerNormalization in the default domain, SkipSimplifiedLayerNormalization)."""

    def write(tmp: Path) -> None:
        import onnx
        from onnxruntime.transformers import optimizer

        config = MODELS[name].build().model.config
        with zoo.quiet():
            fused = optimizer.optimize_model(
                str(export(name, exporter)), model_type=model_type, opt_level=0,
                num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
        onnx.save(fused.model, str(tmp))

    suffix = "" if model_type == "bert" else f"-{model_type}"
    return zoo.cached(f"{name}-{exporter}-ort-optimized{suffix}.onnx", write, cache_dir())
