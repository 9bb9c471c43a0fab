"""Models from other frameworks and their tasks, for tests/test_frameworks_*.py and
tools/eval_frameworks.py.

- scikit-learn: an ``MLPClassifier`` (128, 64) trained on digits (the bundled model's split),
  converted by skl2onnx (``zipmap`` off: outputs ``label`` and ``probabilities``).
- magika (Keras/JAX origin, converted by tf2onnx, shipped in the PyPI package): its content-
  type model, judged on real files of this machine with an unambiguous type. Files come from
  the Python standard library and /usr/share, chosen by extension (the expected label),
  larger than 512 bytes, in sorted path order; ``split`` 0 and 1 interleave, so calibration
  and evaluation never share a file.
- Keras (random weights, seed 0): applications and a MultiHeadAttention block; and a small
  CNN trained on the digits split (40 epochs, seed 0). Converted by tf2onnx directly or
  through a TFLite flatbuffer, in a subprocess (TensorFlow must not load into a process that
  has torch).
"""

from __future__ import annotations

import shutil
import sysconfig
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["EXPECTED", "KERAS_BATCH", "KERAS_MODELS", "TFLITE_MODELS", "digits_split", "files",
           "keras_export", "magika_features", "magika_labels", "magika_model_dir",
           "sklearn_digits_mlp"]  # fmt: skip

#: file extension -> magika content-type label
EXPECTED = {
    ".py": "python", ".json": "json", ".xml": "xml", ".html": "html", ".svg": "svg",
    ".png": "png", ".gz": "gzip", ".c": "c", ".css": "css", ".pl": "perl", ".sql": "sql",
    ".md": "markdown", ".rst": "rst", ".sh": "shell", ".csv": "csv", ".gif": "gif",
    ".ttf": "ttf", ".jar": "jar", ".pem": "pem", ".vim": "vba",
}  # fmt: skip


def files(per_label: int = 12, split: int = 0) -> list[tuple[Path, str]]:
    """Up to ``per_label`` files per expected label, from split 0 or 1."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path("/usr/share")]
    found: dict[str, list[Path]] = {label: [] for label in EXPECTED.values()}
    for root in roots:
        for path in sorted(root.rglob("*")):
            label = EXPECTED.get(path.suffix.lower())
            if label is None or len(found[label]) >= 2 * per_label:
                continue
            try:
                if path.is_file() and not path.is_symlink() and path.stat().st_size > 512:
                    found[label].append(path)
            except OSError:
                continue
    return [(p, label) for label, paths in found.items() for p in paths[split::2][:per_label]]


def magika_model_dir() -> Path:
    """The folder of magika's bundled model (model.onnx and its config)."""
    import magika

    return next((Path(magika.__file__).parent / "models").glob("standard_v*"))


def magika_labels(paths: list[Path], model: Path | None = None) -> list[str]:
    """The model's own label for each path (``dl.label``, before magika's thresholds), with
    ``model`` (an .onnx file) in place of the bundled one when given."""
    import magika

    if model is None:
        return [str(r.dl.label) for r in magika.Magika().identify_paths(paths)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        shutil.copytree(magika_model_dir(), folder)
        shutil.copyfile(model, folder / "model.onnx")
        return [str(r.dl.label) for r in magika.Magika(model_dir=folder).identify_paths(paths)]


def magika_features(paths: list[Path]) -> list[dict[str, np.ndarray]]:
    """The model inputs magika computes for ``paths`` (calibration feeds), captured at its
    onnxruntime session (magika has no public feature API)."""
    import magika

    m = magika.Magika()
    feeds: list[dict[str, np.ndarray]] = []
    run = m._onnx_session.run

    def capture(names, feed):
        feeds.append({"bytes": np.asarray(feed["bytes"], dtype=np.int32)})
        return run(names, feed)

    m._onnx_session.run = capture
    m.identify_paths(paths)
    return feeds


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as (x_train, x_test, y_train, y_test): 64 pixels in [0, 1],
    a stratified quarter held out (the bundled model's split)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    return tuple(train_test_split(x, y, test_size=0.25, stratify=y, random_state=0))


def sklearn_digits_mlp():
    """(ONNX model, x_train, x_test, y_test) of a digits MLPClassifier via skl2onnx."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    x_train, x_test, y_train, y_test = digits_split()
    clf = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=400, random_state=0)
    clf.fit(x_train, y_train)
    proto = to_onnx(clf, x_train[:1], options={"zipmap": False}, target_opset=17)
    return proto, x_train, x_test, y_test


#: Keras models built here (random weights, fixed seed) and converted by tf2onnx.
KERAS_MODELS = {
    "mobilenet_v2": "keras.applications.MobileNetV2(weights=None, alpha=0.35, "
                    "input_shape=(96, 96, 3), classes=10, classifier_activation=None)",
    "resnet50": "keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10, "
                "classifier_activation=None)",
    "mha_block": "mha_block()",
    "mha_block_batch1": "mha_block()",
    "digits_cnn": "digits_cnn()",
}  # fmt: skip
#: Models exported with a static batch (others declare it dynamic).
KERAS_BATCH = {"mha_block_batch1": 1}
#: Models that go Keras -> TFLite (TFLiteConverter) -> ONNX (tf2onnx.convert.from_tflite).
TFLITE_MODELS = {"mobilenet_v2_tflite": KERAS_MODELS["mobilenet_v2"],
                 "digits_cnn_tflite": KERAS_MODELS["digits_cnn"]}  # fmt: skip

_KERAS_SCRIPT = """
import sys, keras, tensorflow as tf, tf2onnx, onnx
keras.utils.set_random_seed(0)
def mha_block():
    x = keras.Input((16, 32), name="input")
    a = keras.layers.MultiHeadAttention(num_heads=4, key_dim=8)(x, x)
    h = keras.layers.LayerNormalization()(x + a)
    f = keras.layers.Dense(32)(keras.layers.Dense(64, activation="relu")(h))
    y = keras.layers.LayerNormalization()(h + f)
    out = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling1D()(y))
    return keras.Model(x, out)
def digits_cnn():
    sys.path.insert(0, sys.argv[5])
    from frameworks import digits_split
    x_train, _, y_train, _ = digits_split()
    x = keras.Input((8, 8, 1), name="input")  # functional: tf2onnx misses Sequential outputs
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(h)
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D()(h))
    h = keras.layers.Dense(128, activation="relu")(h)
    model = keras.Model(x, keras.layers.Dense(10)(h))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train.reshape(-1, 8, 8, 1), y_train, epochs=40, batch_size=32, verbose=0)
    return model
model = eval(sys.argv[1])
if sys.argv[3] == "tflite":
    flat = sys.argv[2] + ".tflite"
    with open(flat, "wb") as f:
        f.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    proto, _ = tf2onnx.convert.from_tflite(flat, opset=17)
else:
    shape = (None if sys.argv[4] == "None" else int(sys.argv[4]), *model.inputs[0].shape[1:])
    spec = (tf.TensorSpec(shape, tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
onnx.save(proto, sys.argv[2])
"""


def keras_export(name: str) -> Path:
    """Cached tf2onnx export of Keras model ``name`` (a key of KERAS_MODELS, or of
    TFLITE_MODELS to go through a .tflite file), built and converted in a subprocess so
    TensorFlow never shares a process with torch."""
    import hashlib
    import os
    import subprocess
    import sys
    from importlib import metadata

    import zoo

    def write(tmp: Path) -> None:
        mode = "tflite" if name in TFLITE_MODELS else "keras"
        source = TFLITE_MODELS.get(name) or KERAS_MODELS[name]
        done = subprocess.run(
            [sys.executable, "-c", _KERAS_SCRIPT, source, str(tmp), mode,
             str(KERAS_BATCH.get(name)), str(Path(__file__).parent)],
            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        Path(f"{tmp}.tflite").unlink(missing_ok=True)
        if done.returncode:
            raise RuntimeError(f"Keras export of {name} failed:\n{done.stderr[-4000:]}")

    folder = zoo.cache_dir().parent / (f"tensorflow-{metadata.version('tensorflow-cpu')}_"
                                       f"tf2onnx-{metadata.version('tf2onnx')}")
    recipe = f"{_KERAS_SCRIPT}{TFLITE_MODELS.get(name) or KERAS_MODELS[name]}{KERAS_BATCH.get(name)}"
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:8]  # a changed recipe re-exports
    return zoo.cached(f"keras-{name}-{digest}.onnx", write, folder)
