"""The one small interface every export target implements (:class:`TargetSpec`), kept apart from the registry so
that target modules can import it without importing each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.manifest import FLOAT_PRECISIONS

__all__ = ["FLOAT_PRECISIONS", "TargetSpec"]

if TYPE_CHECKING:
    from ..context import ExportContext
    from ..manifest_writer import Artifact



@dataclass(frozen=True)
class TargetSpec:
    """One kind of artifact: ``name`` is the manifest's ``artifact.target`` (the runtime backend that runs it),
    ``suffix`` the file the runtime opens, ``export(context, precision)`` writes it (manifest, sidecar and all) and
    returns it. ``flavour`` names a second kind of file for the same backend (Android's TFLite), written only when
    an export asks for that flavour."""

    name: str
    suffix: str
    precisions: tuple[str, ...]
    export: Callable[[ExportContext, str], Artifact]
    flavour: str = ""
