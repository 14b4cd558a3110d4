"""``python -m tests.suite [pytest args] [paths]``: what ``make test`` and ``make test-quick`` run.

Each test module runs in its own pytest process. A user's ``make test`` once died with a segfault at the
177th test, in training code that passes alone: state left by earlier modules (TensorFlow, OpenVINO,
onnxruntime and torch all loaded into one process) brought down the whole run, with no summary (issue 16).
A process per module means one library's global state cannot reach another module's tests, and a crash
costs one module, not the run. The price is a few seconds of imports per module (16 modules).

The crash-report plugin (``tests/crash_report.py``) keeps the running test's name and the outcome counts in
a state file. When a module's pytest dies by a signal this prints the line pytest could not:

    CRASH: pytest died by SIGSEGV in tests/test_x.py::test_y (170 passed, 2 failed before it; stacks above)

and goes on with the next module. The run ends with one line summing every module
(``N passed, N failed, N skipped``, plus errors and crashed modules) and exits non-zero if anything failed
or crashed. Given explicit paths or node ids it runs them in one process, as plain pytest would.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_TESTS_COLLECTED = 5  # pytest's exit status when a -m filter deselects a whole module


def crash_line(returncode: int, state: dict) -> str | None:
    """The summary for a pytest that died by a signal (negative return code), else None."""
    if returncode >= 0:
        return None
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    counts = state.get("counts") or {}
    before = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "error", "skipped") if counts.get(k)) or "none"
    where = state.get("running") or "between tests (collection, a fixture teardown or the session's end)"
    return f"CRASH: pytest died by {name} in {where} ({before} before it; the Python stacks are above)"


def _read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"running": None, "counts": {}}


def run_pytest(args: list[str], state_file: Path) -> tuple[int, dict]:
    """One pytest process with the crash-report plugin; its return code and final state."""
    env = {**os.environ, "EFFDET_TEST_STATE": str(state_file), "PYTHONFAULTHANDLER": "1"}
    state_file.unlink(missing_ok=True)
    code = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.crash_report", *args], cwd=ROOT,
                          env=env).returncode
    return code, _read_state(state_file)


def _targets(args: list[str]) -> list[str]:
    """Explicit paths / node ids among the arguments (those that name an existing file or folder)."""
    return [a for a in args if not a.startswith("-") and Path(ROOT, a.split("::")[0]).exists()]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="effdet-tests-") as tmp:
        state_file = Path(tmp) / "state.json"
        if _targets(args):
            code, state = run_pytest(args, state_file)
            line = crash_line(code, state)
            if line:
                print(line, flush=True)
                return 128 - code
            return code
        modules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
        totals: collections.Counter[str] = collections.Counter()
        crashed, failed_modules = [], []
        t0 = time.time()
        for module in modules:
            code, state = run_pytest([*args, module], state_file)
            totals.update(state.get("counts") or {})
            line = crash_line(code, state)
            if line:
                print(line, flush=True)
                crashed.append(module)
            elif code not in (0, NO_TESTS_COLLECTED):
                failed_modules.append(module)
    minutes = (time.time() - t0) / 60
    summary = ", ".join(f"{totals[k]} {k}" for k in ("passed", "failed", "skipped") if k in ("passed", "failed")
                        or totals[k])
    extra = [f"{totals['error']} errors"] if totals["error"] else []
    extra += [f"{len(crashed)} modules crashed ({', '.join(crashed)})"] if crashed else []
    print(f"\n{len(modules)} modules in {minutes:.1f} min" + (f"; failing: {', '.join(failed_modules)}"
                                                              if failed_modules else ""))
    print(summary + (", " + ", ".join(extra) if extra else ""), flush=True)
    return 1 if crashed or failed_modules or totals["failed"] or totals["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
