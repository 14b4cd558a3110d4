"""EfficientDet on-device runtime: numpy + OpenCV + one inference backend per artifact.

Nothing here imports torch, TensorFlow or the training code; see README.md for usage.
"""

from .backends import BackendUnavailableError
from .contract import AnchorSpec, BoxCoding, Contract, PostprocessSpec, PreprocessSpec, TensorSpec
from .detector import CpuClassWarning, Detector, Result, UngatedArtifactWarning
from .draw import draw_detections
from .errors import ArtifactError
from .manifest import MANIFEST_FORMAT, Manifest, ManifestError, load_manifest, validate_manifest
from .preprocess import ImageError

__version__ = "0.1.0"
__all__ = ["MANIFEST_FORMAT", "AnchorSpec", "ArtifactError", "BackendUnavailableError", "BoxCoding", "Contract",
           "CpuClassWarning", "Detector", "ImageError", "Manifest", "ManifestError", "PostprocessSpec",
           "PreprocessSpec", "Result", "TensorSpec", "UngatedArtifactWarning", "draw_detections", "load_manifest",
           "validate_manifest"]
