"""The field-fidelity set and its gate: images unlike the calibration set, and a verdict that fails an artifact
whose detections leave FP32's there even when the evaluation split looks fine (issue 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convert.field import FIELD_SHIFTED, MIN_SCENES, SHIFTS, dead_leaves, field_images
from convert.gates import FAIL, MIN_REFERENCE_DETECTIONS, PASS, gate_for, verdict
from efficientdet.data.loader import load_dataset
from efficientdet.data.records import DetectionDataset
from efficientdet.data.synthetic import resolve_dataset
from runtime.preprocess import read_image
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def val() -> DetectionDataset:
    return load_dataset(resolve_dataset(ROOT / "data" / "synthetic"), "val", verify_images=False)


def test_field_set_shifts_every_evaluation_image_once_and_adds_other_scenes(val: DetectionDataset) -> None:
    field = field_images(val)
    shifted = [f for f in field if f.kind in SHIFTS]
    scenes = [f for f in field if f.kind not in SHIFTS]
    assert len(shifted) == min(FIELD_SHIFTED, len(val.records)) and {f.kind for f in shifted} == set(SHIFTS)
    assert len(scenes) >= MIN_SCENES
    # a model trained on the synthetic shapes gets no synthetic shapes as "another distribution"
    assert {f.kind for f in scenes} == {"dead-leaves"}
    again = field_images(val)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(field, again))  # seeded: the gate is repeatable
    first = read_image(val.records[0].path)
    dark = next(f for f in shifted if f.kind == "dark")
    assert dark.image.mean() < 0.5 * first.mean()


def test_a_real_data_model_gets_synthetic_scenes_too(val: DetectionDataset) -> None:
    import dataclasses

    other = dataclasses.replace(val, class_names=["RBC", "WBC", "Platelets"], records=val.records[:8])
    kinds = [f.kind for f in field_images(other) if f.kind not in SHIFTS]
    assert "synthetic-shapes" in kinds and "dead-leaves" in kinds


def test_dead_leaves_are_varied_and_reach_dark_values() -> None:
    a, b = dead_leaves(1), dead_leaves(2)
    assert a.shape == (320, 320, 3) and a.dtype == np.uint8 and not np.array_equal(a, b)
    assert a.min() < 30 and a.std() > 20


def _parity(split: float, field: float | None, field_refs: int = 200) -> dict:
    p = {"outputs": {}, "det_match": split, "det_match_reverse": split, "map_delta": 0.0, "map": 0.5,
         "map_ref": 0.5, "num_detections_ref": 300, "num_images": 100}
    if field is not None:
        p["field"] = {"det_match": field, "det_match_reverse": 0.97, "num_detections_ref": field_refs,
                      "num_images": 60, "by_kind": {"dark": {"det_match": field / 2, "num_detections_ref": 20},
                                                    "bright": {"det_match": 1.0, "num_detections_ref": 20}}}
    return p


def test_gate_fails_an_artifact_whose_field_fidelity_collapses() -> None:
    gate = gate_for("int8")
    assert verdict(_parity(0.97, 0.95), gate)[0] == PASS
    status, failures = verdict(_parity(0.97, 0.40), gate)
    assert status == FAIL and len(failures) == 1
    assert failures[0].startswith("field: reference detections matched 40.00% < 85.00%")
    assert "worst: dark" in failures[0]
    # float gates bound the raw outputs and do not gate the field; too few field detections are reported only
    assert gate_for("fp16").field_det_match_min is None
    assert verdict(_parity(0.97, 0.40, field_refs=MIN_REFERENCE_DETECTIONS - 1), gate)[0] == PASS
    # an export made before the field set existed still gets a verdict on its split figures
    assert verdict(_parity(0.97, None), gate)[0] == PASS


def test_field_threshold_can_be_overridden_from_the_command_line() -> None:
    from convert.cli import parse_gate_overrides

    assert parse_gate_overrides(["field_det_match_min=0.5"]) == {"field_det_match_min": 0.5}
    assert verdict(_parity(0.97, 0.6), gate_for("int8").tightened(field_det_match_min=0.5))[0] == PASS


def test_report_shows_the_field_figures(tmp_path: Path) -> None:
    from convert.report import markdown

    entry = {"target": "tflite", "precision": "int8", "size_bytes": 4_000_000, "path": "x.tflite",
             "parity": {**_parity(0.97, 0.40), "rel_err": None, "snr_db": None, "pearson": None, "map50": 0.8,
                        "input_clipped": 0.0},
             "gate": {"status": FAIL, "failures": ["field: ..."]}}
    entry["parity"]["field"]["input_clipped"] = 0.0
    report = {"model": "m", "checkpoint": "c", "checkpoint_sha256": "0" * 64, "data": "d", "split": "val",
              "num_images": 100, "map_ref": 0.5, "artifacts": [entry], "gates": {"int8": gate_for("int8").to_dict()}}
    text = markdown(report)
    assert "| 40.0% / 97.0% | 0.00% / 0.00% | **FAIL** |" in text
    assert "| int8 | — | 90% | 0.5 | 1 | 85% |" in text
