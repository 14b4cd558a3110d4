"""``python -m tests.suite`` (``make test``) names the test that killed pytest, with the signal and the counts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT


def test_a_native_crash_names_the_test_and_prints_its_stack(tmp_path: Path) -> None:
    crashing = tmp_path / "test_native_crash.py"
    crashing.write_text(textwrap.dedent("""
        import ctypes

        def test_one():
            pass

        def test_two():
            pass

        def test_dies_in_native_code():
            ctypes.string_at(0)  # a segfault, as a broken native library would cause

        def test_never_reached():
            pass
    """))
    proc = subprocess.run([sys.executable, "-m", "tests.suite", "-q", "-p", "no:cacheprovider", str(crashing)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 128 + 11
    assert (f"CRASH: pytest died by SIGSEGV in {crashing.name}::test_dies_in_native_code (2 passed before it"
            in proc.stdout.replace(str(crashing.parent) + "/", "")), proc.stdout + proc.stderr
    assert f'File "{crashing}", line 11 in test_dies_in_native_code' in proc.stderr


def test_a_normal_run_passes_pytest_status_through(tmp_path: Path) -> None:
    failing = tmp_path / "test_plain_failure.py"
    failing.write_text("def test_ok():\n    pass\n\n\ndef test_bad():\n    assert 1 == 2\n")
    proc = subprocess.run([sys.executable, "-m", "tests.suite", "-q", "-p", "no:cacheprovider", str(failing)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "1 failed, 1 passed" in proc.stdout and "CRASH" not in proc.stdout
