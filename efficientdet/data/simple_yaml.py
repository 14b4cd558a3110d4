"""Just enough YAML for YOLO ``data.yaml`` files, so the project needs no YAML dependency.

Supported: ``key: scalar``, flow lists ``key: [a, 'b c']``, flow maps ``key: {0: a}``, and one level of
block list (``- a``) or block map (``0: a``) under a key with an empty value; ``#`` comments; quotes.
Anything fancier (anchors, multi-line strings, deeper nesting) is not supported.
"""

from __future__ import annotations

import re
from typing import Any

_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?")


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _split_flow(inner: str) -> list[str]:
    parts, current, quote = [], "", None
    for ch in inner:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ",":
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    return [p for p in (p.strip() for p in parts) if p]


def scalar(text: str) -> Any:
    """A plain YAML scalar: quoted string, int, float, bool, null, or bare string."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    lowered = text.lower()
    if lowered in ("null", "~", ""):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    return text


def value(text: str) -> Any:
    """A scalar or a one-line flow list/map."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        return [scalar(p) for p in _split_flow(text[1:-1])]
    if text.startswith("{") and text.endswith("}"):
        pairs = (p.split(":", 1) for p in _split_flow(text[1:-1]) if ":" in p)
        return {scalar(k): scalar(v) for k, v in pairs}
    return scalar(text)


def parse_simple_yaml(text: str) -> dict[str, Any]:
    """Parse the simple YAML subset described in the module docstring into a dict."""
    result: dict[str, Any] = {}
    block_key = None
    for raw in text.splitlines():
        line = _strip_comment(raw).rstrip()
        body = line.strip()
        if not body or body in ("---", "..."):
            continue
        indented = line[0].isspace()
        if block_key is not None and (indented or body.startswith("- ")):
            if body.startswith("-"):
                if result[block_key] is None:
                    result[block_key] = []
                if isinstance(result[block_key], list):
                    result[block_key].append(value(body[1:]))
            elif ":" in body:
                if result[block_key] is None:
                    result[block_key] = {}
                if isinstance(result[block_key], dict):
                    key, val = body.split(":", 1)
                    result[block_key][scalar(key)] = value(val)
            continue
        if indented or ":" not in body:
            continue
        key, val = body.split(":", 1)
        key = str(scalar(key))
        result[key] = value(val) if val.strip() else None
        block_key = None if val.strip() else key
    return result
