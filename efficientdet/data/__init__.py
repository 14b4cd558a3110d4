"""Dataset layer: COCO / Pascal VOC / YOLO readers into one validated record type, plus a synthetic set."""

from efficientdet.data.loader import load_dataset
from efficientdet.data.records import DatasetError, DetectionDataset, ImageRecord

__all__ = ["DatasetError", "DetectionDataset", "ImageRecord", "load_dataset"]
