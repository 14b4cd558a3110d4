"""pytest plugin: when a native library kills the test process, say which test it was and show its stack.

A user's ``make test`` once ended with only ``make: *** [Makefile] Segmentation fault``: no summary and
no test name (issue 16). Two things were missing:

* pytest's own faulthandler is installed once, at start-up; a native library that installs a SIGSEGV or
  SIGABRT handler of its own after that would hide it. (Measured here: after importing TensorFlow and
  torch in a test, pytest's handler still printed the stack of a segfault; re-arming is a cheap guard.)
  This plugin re-arms ``faulthandler`` (all threads, on a private copy of stderr) at the start of every
  test, so the handler of the moment is always the one that prints the Python stacks.
* With ``-q`` nothing names the running test, and a dead pytest prints no summary. When
  ``EFFDET_TEST_STATE`` names a file, the plugin keeps the running test's node id and the outcome
  counts so far in it (rewritten atomically at each test); ``python -m tests.suite`` (what ``make test``
  runs) reads it back when pytest dies by a signal and prints one line: which test, which signal, how
  many passed and failed before.
"""

from __future__ import annotations

import collections
import faulthandler
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import pytest

STATE_ENV = "EFFDET_TEST_STATE"

_stderr: TextIO | None = None
_counts: collections.Counter[str] = collections.Counter()


def _write_state(nodeid: str | None) -> None:
    path = os.environ.get(STATE_ENV)
    if not path:
        return
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"running": nodeid, "counts": dict(_counts)}))
    os.replace(tmp, path)


def pytest_sessionstart(session: pytest.Session) -> None:
    global _stderr
    _stderr = os.fdopen(os.dup(sys.__stderr__.fileno()), "w")
    _write_state(None)


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    if _stderr is not None:
        faulthandler.enable(file=_stderr, all_threads=True)
    _write_state(nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        if report.when != "call" and report.outcome == "failed":
            _counts["error"] += 1
        else:
            _counts[report.outcome] += 1


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    _write_state(None)
