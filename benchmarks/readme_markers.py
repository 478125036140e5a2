"""The README's generated tables: the text between ``<!-- NAME -->`` and ``<!-- /NAME -->``."""

from __future__ import annotations

import re
from pathlib import Path

from drcn_plugin.writing import atomic_write_bytes

README = Path(__file__).resolve().parents[1] / "README.md"


def fill_readme(tables: dict[str, str], readme: Path = README) -> None:
    """Put each text of ``tables`` (marker name -> text) between its markers in ``readme``. A
    missing marker stops the script with one line and leaves the file as it was."""
    body = readme.read_text()
    for marker, text in tables.items():
        name = re.escape(marker)
        pattern = re.compile(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", re.S)
        body, found = pattern.subn(lambda m, text=text: m.group(1) + text + "\n" + m.group(2),
                                   body)
        if not found:
            raise SystemExit(f"{readme.name} has no <!-- {marker} --> markers")
    atomic_write_bytes(readme, body.encode())
