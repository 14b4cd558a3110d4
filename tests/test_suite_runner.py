"""``python -m tests.suite`` (``make test``) names the test that killed pytest, with the signal and the counts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

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
    # pytest names the file relative to its rootdir, which depends on where the checkout lies against the temporary
    # folder (a checkout under /tmp gave "pytest-of-root/pytest-438/.../test_native_crash.py"): drop any folder part
    shown = re.sub(r"[^\s]*/(?=" + re.escape(crashing.name) + ")", "", proc.stdout)
    assert (f"CRASH: pytest died by SIGSEGV in {crashing.name}::test_dies_in_native_code (2 passed before it"
            in shown), proc.stdout + proc.stderr
    assert f'File "{crashing}", line 11 in test_dies_in_native_code' in proc.stderr


def test_a_normal_run_passes_pytest_status_through(tmp_path: Path) -> None:
    failing = tmp_path / "test_plain_failure.py"
    failing.write_text("def test_ok():\n    pass\n\n\ndef test_bad():\n    assert 1 == 2\n")
    proc = subprocess.run([sys.executable, "-m", "tests.suite", "-q", "-p", "no:cacheprovider", str(failing)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "1 failed, 1 passed" in proc.stdout and "CRASH" not in proc.stdout


def test_modules_run_side_by_side_and_a_crash_costs_only_its_own(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Two workers: each of the first two modules waits until the other has started (so they did run at the same
    time, whatever the machine's load); the third crashes; every outcome is still counted and named."""
    from tests.suite import run_modules

    flags = tmp_path / "flags"
    flags.mkdir()
    waiting = textwrap.dedent("""
        import os
        import time
        from pathlib import Path

        def test_meets_the_other():
            Path({mine!r}).write_text(os.environ.get("OMP_NUM_THREADS", "unset"))
            deadline = time.monotonic() + 240
            while not Path({other!r}).exists():
                assert time.monotonic() < deadline, "timeout: the other module never started beside this one"
                time.sleep(0.05)
    """)
    a, b = flags / "a", flags / "b"
    (tmp_path / "test_a.py").write_text(waiting.format(mine=str(a), other=str(b)))
    (tmp_path / "test_b.py").write_text(waiting.format(mine=str(b), other=str(a)))
    (tmp_path / "test_c.py").write_text("import ctypes\n\n\ndef test_ok():\n    pass\n\n\n"
                                        "def test_dies():\n    ctypes.string_at(0)\n")
    modules = [str(tmp_path / f"test_{k}.py") for k in "abc"]
    runs = {Path(r.module).stem: r for r in run_modules(modules, ["-q", "-p", "no:cacheprovider"], 2, tmp_path)}
    out = capsys.readouterr().out
    assert runs["test_a"].code == 0 and runs["test_b"].code == 0, out
    # each worker gets its share of the cores for OpenMP (torch's threads stalled at barriers under load)
    share = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // 2))
    assert a.read_text() == b.read_text() == share
    assert runs["test_c"].code == -11 and runs["test_c"].state["counts"] == {"passed": 1}
    assert "CRASH: pytest died by SIGSEGV in" in out and "test_c.py::test_dies (1 passed before it" in out
    headers = re.findall(r"^===== (\S+): [0-9.]+ min, CPU [0-9.]+ min =====$", out, flags=re.M)
    assert sorted(Path(h).stem for h in headers) == ["test_a", "test_b", "test_c"], out  # one per module


def test_a_run_cut_short_shows_where_each_running_module_was(tmp_path: Path) -> None:
    """CI's SIGTERM (or Ctrl-C) during a two-worker run: the running modules' output was kept in files that were
    deleted unprinted, and the pytest processes were left behind."""
    started = tmp_path / "started"
    (tmp_path / "test_hang.py").write_text(textwrap.dedent(f"""
        import os
        import time
        from pathlib import Path

        def test_quick():
            pass

        def test_hangs():
            print("partial output before the hang", flush=True)
            Path({str(started)!r}).write_text(str(os.getpid()))
            time.sleep(600)
    """))
    script = textwrap.dedent(f"""
        import signal
        from pathlib import Path
        from tests import suite

        signal.signal(signal.SIGTERM, suite._terminated)
        suite.run_modules([{str(tmp_path / "test_hang.py")!r}], ["-q", "-s", "-p", "no:cacheprovider"], 2,
                          Path({str(tmp_path)!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not started.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "timeout: the hanging test never started"
        time.sleep(0.1)
    proc.terminate()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + 15, out
    assert "partial output before the hang" in out and "test_hang.py::test_hangs" in out, out
    assert "INTERRUPTED:" in out
    pytest_pid = int(started.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pytest_pid, 0)
