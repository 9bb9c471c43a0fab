"""RapidOCR's models (PaddleOCR, converted by paddle2onnx, shipped in the PyPI package
``rapidocr-onnxruntime``) and a reading task for them, for tests/test_frameworks_rapidocr.py
and tools/eval_frameworks.py.

- Text: the first docstring lines of the Python standard library's modules (ASCII, 16 to 44
  characters, in sorted path order, each once) interleaved with order lines of seeded random
  digits, so letters, punctuation and numbers all occur.
- Pages: 12 lines each, black on white, 760 x 736 pixels (RapidOCR's detector then runs at
  the page's own size), rendered offline with PIL in a DejaVu system font (sans, serif and
  mono in turn), or PIL's bundled font where DejaVu is missing. Even pages and odd pages
  never share a line: one set calibrates, the other judges.
- Accuracy: 1 - (Levenshtein distance / length), at least 0, of the page's text against what
  the whole pipeline (detection -> direction -> recognition) reads, lines joined in its
  reading order, spaces ignored (the recogniser, trained on Chinese, often drops English
  word spaces).
"""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

import numpy as np

__all__ = ["MODELS", "character_accuracy", "model_file", "model_feeds", "pages", "read_pages"]

#: role -> model file in the rapidocr_onnxruntime package
MODELS = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
}
_LINES_PER_PAGE = 12
_FONTS = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf"]
_FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"),
              Path("/usr/share/fonts/TTF")]  # fmt: skip

Page = tuple[np.ndarray, list[str]]


def model_file(role: str) -> Path:
    """The packaged model for ``role`` (``det``, ``cls`` or ``rec``)."""
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).parent / "models" / MODELS[role]


def _lines(count: int) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    text: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if len(text) >= count:
            break
        if "test" in path.parts or "idlelib" in path.parts:
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        first = (doc or "").strip().split("\n")[0].strip().rstrip(".:")
        if 16 <= len(first) <= 44 and first.isascii() and first not in text:
            text.append(first)
    rng = np.random.default_rng(0)
    out: list[str] = []
    for i, line in enumerate(text):
        out.append(line)
        if i % 2:
            day, n, cents = rng.integers(1, 29), rng.integers(10000, 99999), rng.integers(100, 99999)
            out.append(f"Order {n} due 2026-{1 + i % 12:02d}-{day:02d}, total {cents / 100:.2f}")
    return out


def _font(index: int, size: int = 26):
    from PIL import ImageFont

    for folder in _FONT_DIRS:
        path = folder / _FONTS[index % len(_FONTS)]
        if path.exists():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def pages(count: int, split: int = 0) -> list[Page]:
    """``count`` pages (BGR uint8 images as RapidOCR reads them, and their lines) of split 0
    (even pages) or 1 (odd pages)."""
    from PIL import Image, ImageDraw

    lines = _lines(2 * count * _LINES_PER_PAGE)
    out: list[Page] = []
    for number in range(split, 2 * count, 2):
        text = lines[number * _LINES_PER_PAGE:(number + 1) * _LINES_PER_PAGE]
        if len(text) < _LINES_PER_PAGE:
            break
        image = Image.new("RGB", (760, 736), "white")
        draw = ImageDraw.Draw(image)
        font = _font(number)
        for row, line in enumerate(text):
            draw.text((24, 16 + 59 * row), line, fill="black", font=font)
        out.append((np.asarray(image)[:, :, ::-1].copy(), text))
    return out


def _engine(models: dict[str, Path] | None = None):
    from rapidocr_onnxruntime import RapidOCR

    paths = {f"{role}_model_path": str(path) for role, path in (models or {}).items()}
    return RapidOCR(**paths)


def read_pages(page_list: list[Page], models: dict[str, Path] | None = None) -> list[str]:
    """The text the pipeline reads on each page, with ``models`` (role -> .onnx file) in place
    of the packaged ones."""
    engine = _engine(models)
    out = []
    for image, _ in page_list:
        found, _ = engine(image)
        out.append("\n".join(text for _, text, _ in (found or [])))
    return out


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def character_accuracy(page_list: list[Page], read: list[str]) -> float:
    """1 - edit distance / characters over all pages (0 at worst: a model that reads garbage
    can make more edits than there are characters), spaces ignored, lines joined."""
    errors = total = 0
    for (_, lines), got in zip(page_list, read, strict=True):
        want = "\n".join(lines).replace(" ", "")
        errors += _levenshtein(want, got.replace(" ", ""))
        total += len(want)
    return max(0.0, 1 - errors / total)


def model_feeds(page_list: list[Page]) -> dict[str, list[dict[str, np.ndarray]]]:
    """The inputs the pipeline feeds each model (role -> feeds) while reading ``page_list``,
    captured at its onnxruntime sessions (RapidOCR has no public preprocessing API)."""
    engine = _engine()
    feeds: dict[str, list[dict[str, np.ndarray]]] = {role: [] for role in MODELS}
    sessions = {"det": engine.text_det.infer, "cls": engine.text_cls.infer,
                "rec": engine.text_rec.session}  # fmt: skip
    for role, wrapper in sessions.items():
        run = wrapper.session.run

        def capture(names, feed, run=run, role=role):
            feeds[role].append({k: np.array(v) for k, v in feed.items()})
            return run(names, feed)

        wrapper.session.run = capture
    for image, _ in page_list:
        engine(image)
    return feeds
