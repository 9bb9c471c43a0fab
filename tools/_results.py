"""Where the tools put their numbers: ``<stem>.json`` (the data) and ``<stem>.md`` (the table
the README quotes) in one folder, the table printed too. A helper of the tools, not a tool."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write(stem: str, data: object, table: str, folder: Path = RESULTS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(data, indent=1))
    (folder / f"{stem}.md").write_text(table)
    print(table)
