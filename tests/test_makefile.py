"""The Makefile as a user drives it: paths with spaces reach the commands as one argument, the variables that
matter are in `make help`, and `make eval` writes under runs/ (dry runs, `make -n`: nothing is executed)."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def _dry(*args: str) -> list[list[str]]:
    out = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [shlex.split(line) for line in out.replace("\\\n", " ").splitlines() if "python" in line]


def _value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


@pytest.mark.parametrize(("target", "module", "flags"), [
    ("train", "efficientdet", {"--data": "DATA", "--out": "OUT", "--init": "INIT", "--exclude-images": "EXCLUDE"}),
    ("export", "convert", {"--data": "DATA", "--ckpt": "CKPT", "--out": "OUT", "--calib": "CALIB"}),
    ("eval", "efficientdet", {"--data": "DATA", "--ckpt": "CKPT", "--exclude-images": "EXCLUDE"}),
    ("audit-labels", "efficientdet", {"--data": "DATA", "--ckpt": "CKPT", "--out": "AUDIT_OUT"}),
    ("calib", "calib_data", {"--data": "DATA", "--ckpt": "CKPT", "--out": "OUT"}),
    ("bench", "benchmarks.bench", {"--data": "DATA", "--ckpt": "CKPT"}),
])
def test_paths_with_spaces_stay_one_argument(target: str, module: str, flags: dict[str, str]) -> None:
    """`make train DATA="a b"` failed with "unrecognized arguments"."""
    values = {var: f"/tmp/my {var.lower()} dir/x" for var in set(flags.values())}
    commands = _dry(target, *(f"{k}={v}" for k, v in values.items()))
    command = next(c for c in commands if module in c and c[c.index(module) - 1] == "-m")
    for flag, var in flags.items():
        assert _value(command, flag) == values[var], (target, flag, command)


def test_help_names_the_variables_that_matter() -> None:
    text = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for word in ("BATCH=", "INIT=", "EPOCHS=", "INPUT_SIZE=", "CLASS_MAP=", "ACCEPT_UNMEASURABLE=", "VFLIP=",
                 "EXCLUDE=", "AUDIT_SPLITS=", "test-quick"):
        assert word in text, word


def test_make_eval_writes_under_runs_not_beside_the_checkpoint() -> None:
    """`make eval` wrote eval-<split>.json beside the checkpoint, e.g. into the committed models/ (issue 13)."""
    command = next(c for c in _dry("eval", "CKPT=models/bccd-d0.pt", "SPLIT=test") if "efficientdet" in c)
    assert _value(command, "--out") == "runs/eval/bccd-d0-test.json"


def test_make_edgetpu_exports_pixels_in_unless_told_otherwise() -> None:
    """An Edge TPU app feeds the camera's uint8 bytes: `make edgetpu` makes the pixel-input form (its first ops
    SUB and PAD, on the Edge TPU's list), and INT8_INPUT still chooses."""
    def convert(*args: str) -> list[str]:
        return next(c for c in _dry("edgetpu", *args) if "convert" in c and c[c.index("convert") - 1] == "-m")

    assert _value(convert(), "--int8-input") == "pixels" and _value(convert(), "--io-dtype") == "uint8"
    assert _value(convert("INT8_INPUT=normalised"), "--int8-input") == "normalised"
