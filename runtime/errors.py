"""``ArtifactError``: the model file itself is unusable (truncated, corrupt, or pointing outside its folder).

Kept apart from ``ManifestError`` because the fix differs: a bad manifest is re-exported or edited, a bad
artifact is re-copied (a copy cut short is the usual cause) or re-exported. A ``ValueError``, so callers
and the CLI (exit status 2) that already handle bad input handle it too.
"""

from __future__ import annotations

import os


class ArtifactError(ValueError):
    """The artifact's bytes cannot be trusted or loaded; the message names the file, the problem and the fix."""


def corrupt(path: str | os.PathLike[str], kind: str, detail: object) -> ArtifactError:
    """The one wording for a file that fails to parse, so every backend says it the same way."""
    lines = [line.strip() for line in str(detail).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(detail).__name__  # engines put the real reason last, after a trace
    return ArtifactError(f"{path}: truncated or corrupt {kind} file ({reason}): re-copy or re-export it")
