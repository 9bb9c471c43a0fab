"""Train the bundled default model: a small CNN on scikit-learn's digits, exported to ONNX.

Reproducible: fixed seeds, deterministic algorithms, a stratified 75/25 split with
``random_state=0`` (independent of ``--seed``, so the test set never changes). Writes
``models/digits_cnn.onnx`` (TorchScript exporter, opset 17, dynamic batch, BatchNorm folded
by the exporter) and ``models/digits_test.npz`` (the held-out split: ``input`` float32
(N, 1, 8, 8) in [0, 1], ``label`` int64) and ``models/digits_calib.npz`` (the first 256
training images, for calibration), then checks that
onnxruntime reproduces the PyTorch predictions and test accuracy (exit status 1 if not).

    .venv/bin/python tools/train_digits.py   # needs the test extra (torch, scikit-learn)
"""

from __future__ import annotations

import argparse
import random
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
SPLIT_SEED = 0


class DigitsCNN(nn.Module):
    """conv32 -> conv64 -> pool -> conv64 -> residual conv64 -> flatten(64x4x4) -> fc128 -> fc10."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout))

        self.conv1, self.conv2 = block(1, 32), block(32, 64)
        self.conv3, self.conv4 = block(64, 64), block(64, 64)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.conv3(x))
        x = torch.relu(x + self.conv4(x))
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


def seed_everything(seed: int) -> None:
    """Seed every generator and pin PyTorch to deterministic, single-threaded CPU kernels.

    The thread count changes the floating-point summation order (1 and 2 threads give
    different weights), so training runs on one thread; it is also the fastest on this tiny net.
    """
    torch.set_num_threads(1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``x_train, x_test, y_train, y_test``; images are float32 (N, 1, 8, 8) in [0, 1]."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    return train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=SPLIT_SEED
    )


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xs), generator=generator)
        for start in range(0, len(xs), 64):
            idx = order[start : start + 64]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
            loss.backward()
            optimizer.step()
        schedule.step()
    model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    seed_everything(args.seed)
    x_train, x_test, y_train, y_test = load_split()
    model = DigitsCNN()
    start = time.perf_counter()
    train(model, x_train, y_train, args.epochs, args.seed)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_test)).numpy()
    torch_acc = float((torch_logits.argmax(1) == y_test).mean())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out_dir / "digits_cnn.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter is chosen on purpose (dynamo=False)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (torch.from_numpy(x_test[:1]),), str(onnx_path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["logits"], do_constant_folding=True,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    np.savez_compressed(args.out_dir / "digits_test.npz", input=x_test, label=y_test)
    np.savez_compressed(args.out_dir / "digits_calib.npz", input=x_train[:256])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_logits = session.run(None, {"input": x_test})[0]
    ort_acc = float((ort_logits.argmax(1) == y_test).mean())
    same_predictions = bool((ort_logits.argmax(1) == torch_logits.argmax(1)).all())
    max_diff = float(np.abs(ort_logits - torch_logits).max())
    print(
        f"trained {args.epochs} epochs in {seconds:.1f}s; test accuracy on {len(y_test)} images: "
        f"torch {torch_acc:.4f}, onnxruntime {ort_acc:.4f} (max |logit diff| {max_diff:.2e}) "
        f"-> {onnx_path}"
    )
    return 0 if same_predictions and torch_acc == ort_acc else 1


if __name__ == "__main__":
    raise SystemExit(main())
