"""What a user pasted into a host's text field where a path is asked for: the path it names."""

from __future__ import annotations

import urllib.parse
import urllib.request


def pasted_path(text: str) -> str:
    """``text`` without the spaces and the one pair of quotes around it that a pasted path brings
    (Windows Explorer's "Copy as path" adds double quotes), and a ``file://`` URL (what some file
    managers copy) as the local path it names; shells strip these themselves, text fields do
    not."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if text[:7].lower() == "file://":
        url = urllib.parse.urlsplit(text)
        local = url.netloc.lower() in ("", "localhost")  # else a share: //server/share/...
        text = urllib.request.url2pathname(url.path if local else f"//{url.netloc}{url.path}")
    return text
