"""Labels drawn by the runtime render non-ASCII class names (they came out as "K??nguru")."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from runtime.detector import Result
from runtime.draw import ascii_label, draw_detections
from tests.conftest import ROOT


def _result(label: str) -> Result:
    return Result(np.array([[20, 40, 120, 90]], np.float32), np.array([0.9], np.float32), np.array([0]), [label])


def test_a_non_ascii_label_is_rendered_not_replaced_by_question_marks() -> None:
    image = np.full((120, 200, 3), 255, np.uint8)
    drawn = draw_detections(image, _result("Känguru"))
    plain = draw_detections(image, _result("Kanguru"))
    marks = draw_detections(image, _result("K??nguru"))
    label = (slice(0, 40), slice(20, 140))  # the label sits above the box
    assert not np.array_equal(drawn[label], plain[label]) and not np.array_equal(drawn[label], marks[label])
    ink = (drawn[label] < 60).all(axis=2).sum()
    assert ink > 30  # black text was drawn
    np.testing.assert_array_equal(drawn[60:], plain[60:])  # the box itself is drawn the same way


def test_without_pillow_labels_are_transliterated() -> None:
    assert ascii_label("Känguru 0.90") == "Kanguru 0.90" and ascii_label("袋鼠") == "??"
    code = textwrap.dedent("""
        import sys
        sys.modules["PIL"] = None  # as on a device without Pillow
        import numpy as np
        from runtime.detector import Result
        from runtime.draw import draw_detections
        r = lambda label: Result(np.array([[20, 40, 120, 90]], np.float32), np.array([0.9], np.float32),
                                 np.array([0]), [label])
        image = np.full((120, 200, 3), 255, np.uint8)
        print(np.array_equal(draw_detections(image, r("Känguru")), draw_detections(image, r("Kanguru"))))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
