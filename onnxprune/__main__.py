"""``python -m onnxprune`` runs the command line."""

from onnxprune.cli import main

raise SystemExit(main())
