"""``python -m tests.suite [-j N] [pytest args] [paths]``: what ``make test`` and ``make test-quick`` run.

Each test module runs in its own pytest process. A user's ``make test`` once died with a segfault at the
177th test, in training code that passes alone: state left by earlier modules (TensorFlow, OpenVINO,
onnxruntime and torch all loaded into one process) brought down the whole run, with no summary (issue 16).
A process per module means one library's global state cannot reach another module's tests, and a crash
costs one module, not the run.

Modules run ``-j`` at a time (default: one per CPU core, at most 2), longest first. Most of the suite's
time is spent in single-threaded work (converters, calibration, Python), measured at 98 % CPU for one
module on two cores, so a second worker fills the idle core. With more than one worker each module's
output is kept and printed whole when it ends, under a header with its wall and CPU time; a line says
when each module starts.

The crash-report plugin (``tests/crash_report.py``) keeps the running test's name and the outcome counts in
a state file per module. When a module's pytest dies by a signal this prints the line pytest could not:

    CRASH: pytest died by SIGSEGV in tests/test_x.py::test_y (170 passed, 2 failed before it; stacks above)

and goes on with the next module. The run ends with one line summing every module
(``N passed, N failed, N skipped``, plus errors and crashed modules) and exits non-zero if anything failed
or crashed. Given explicit paths or node ids it runs them in one process, as plain pytest would.
"""

from __future__ import annotations

import collections
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
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


# Wall time of the slowest modules on the idle 2-core build machine (seconds, one module at a time, session
# 7). Only the order matters: a run with several workers ends when its last long module does, so the
# longest start first; a module missing here counts as short.
MEASURED_S = {
    "tests/test_int8.py": 1040, "tests/test_convert_matrix.py": 563, "tests/test_verdicts.py": 276,
    "tests/test_android.py": 234, "tests/test_convert.py": 136, "tests/test_hostile.py": 111,
    "tests/test_bench.py": 99, "tests/test_device_check.py": 94, "tests/test_effdet_import.py": 93,
    "tests/test_train.py": 67, "tests/test_runtime.py": 29, "tests/test_cpu_class.py": 26,
}


def _env(state_file: Path, jobs: int = 1) -> dict[str, str]:
    """The module's environment: the crash-report state file, faulthandler, and with several workers each one's
    share of the cores for torch's OpenMP threads (unless OMP_NUM_THREADS is set already).

    Measured under load (two suite workers, a QAT export and two busy loops on 2 cores): the 60-epoch tiny
    training test took 140 s with one OpenMP thread and more than 900 s (its timeout) with torch's default two,
    whose parallel regions wait at every barrier for a thread the scheduler has parked. A user's run died there
    (issue 16); the other modules, which are not OpenMP-bound, slowed 2.6-4.6x in the same run."""
    env = {**os.environ, "EFFDET_TEST_STATE": str(state_file), "PYTHONFAULTHANDLER": "1"}
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "tests.crash_report", *args]


def run_pytest(args: list[str], state_file: Path) -> tuple[int, dict]:
    """One pytest process with the crash-report plugin; its return code and final state."""
    state_file.unlink(missing_ok=True)
    code = subprocess.run(_command(args), cwd=ROOT, env=_env(state_file)).returncode
    return code, _read_state(state_file)


@dataclass
class ModuleRun:
    """One module's pytest process and what it left: return code, outcome counts, wall and CPU seconds."""

    module: str
    state_file: Path
    log: Path | None
    proc: subprocess.Popen | None = None
    started: float = 0.0
    code: int = 0
    state: dict = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def start(self, args: list[str], jobs: int) -> None:
        out = open(self.log, "wb") if self.log else None  # noqa: SIM115 (closed once the child holds it)
        self.started = time.time()
        self.proc = subprocess.Popen(_command([*args, self.module]), cwd=ROOT, env=_env(self.state_file, jobs),
                                     stdout=out, stderr=subprocess.STDOUT if out else None)
        if out:
            out.close()

    def finish(self, status: int, usage: resource.struct_rusage) -> None:
        self.code = os.waitstatus_to_exitcode(status)
        if self.proc is not None:
            self.proc.returncode = self.code  # reaped by os.wait4 already
        self.state = _read_state(self.state_file)
        self.wall_s = time.time() - self.started
        self.cpu_s = usage.ru_utime + usage.ru_stime


def _order(modules: list[str]) -> list[str]:
    return sorted(modules, key=lambda m: (-MEASURED_S.get(m, 0), m))


def _report(run: ModuleRun) -> None:
    """A finished module's output (kept in its log with several workers) under its header, then its crash line."""
    if run.log:
        print(f"\n===== {run.module}: {run.wall_s / 60:.1f} min, CPU {run.cpu_s / 60:.1f} min =====", flush=True)
        sys.stdout.write(run.log.read_text(errors="replace"))
    line = crash_line(run.code, run.state)
    if line:
        print(line, flush=True)


def _interrupted(running: dict[int, ModuleRun]) -> None:
    """The run was cut short (Ctrl-C, CI's SIGTERM): stop the modules still running and show what they printed
    and which test each was in, the output most needed to diagnose a hang."""
    for run in running.values():
        run.proc.terminate()
    for run in running.values():
        try:
            run.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait()
        state = _read_state(run.state_file)
        if run.log and run.log.exists():
            print(f"\n===== {run.module}: interrupted =====", flush=True)
            sys.stdout.write(run.log.read_text(errors="replace"))
        print(f"INTERRUPTED: {run.module} was in {state.get('running') or 'no test'}", flush=True)


def run_modules(modules: list[str], args: list[str], jobs: int, tmp: Path) -> list[ModuleRun]:
    """Every module in its own pytest process, ``jobs`` at a time, longest first. Each of our children is
    polled by its own pid (never ``wait(-1)``, which would reap a child that is not ours)."""
    pending = [ModuleRun(m, tmp / f"{Path(m).stem}.state.json", tmp / f"{Path(m).stem}.log" if jobs > 1 else None)
               for m in _order(modules)]
    running: dict[int, ModuleRun] = {}
    done: list[ModuleRun] = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                run = pending.pop(0)
                run.start(args, jobs)
                running[run.proc.pid] = run
                if jobs > 1:
                    print(f"[suite] started {run.module} ({len(done) + len(running)}/{len(modules)})", flush=True)
            finished = []
            for pid in list(running):
                got, status, usage = os.wait4(pid, os.WNOHANG)
                if got == pid:
                    finished.append((pid, status, usage))
            for pid, status, usage in finished:
                run = running.pop(pid)
                run.finish(status, usage)
                _report(run)
                done.append(run)
            if not finished:
                time.sleep(0.2)
    except BaseException:
        _interrupted(running)
        raise
    return done


def _targets(args: list[str]) -> list[str]:
    """Explicit paths / node ids among the arguments (those that name an existing file or folder)."""
    return [a for a in args if not a.startswith("-") and Path(ROOT, a.split("::")[0]).exists()]


def _jobs(args: list[str]) -> tuple[int, list[str]]:
    """``-j N``, ``-jN``, ``--jobs N`` or ``--jobs=N`` taken out of the arguments (the rest go to pytest);
    default: the CPU cores, at most 2."""
    jobs = min(2, os.cpu_count() or 1)
    rest: list[str] = []
    it = iter(args)
    for a in it:
        if a in ("-j", "--jobs"):
            value = next(it, "")
        elif a.startswith("--jobs="):
            value = a.split("=", 1)[1]
        elif a.startswith("-j") and a[2:].isdigit():
            value = a[2:]
        else:
            rest.append(a)
            continue
        if not value.isdigit() or int(value) < 1:
            raise SystemExit(f"error: {a} {value}: give the number of modules to run at a time, e.g. -j 2")
        jobs = int(value)
    return jobs, rest


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that run_modules stops the running modules and shows their output


def main(argv: list[str] | None = None) -> int:
    jobs, args = _jobs(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminated)
    with tempfile.TemporaryDirectory(prefix="effdet-tests-") as tmp:
        state_file = Path(tmp) / "state.json"
        if _targets(args):
            code, state = run_pytest(args, state_file)
            line = crash_line(code, state)
            if line:
                print(line, flush=True)
                return 128 - code
            return code
        from efficientdet.data.synthetic import DEFAULT_DIR, resolve_dataset

        resolve_dataset(ROOT / DEFAULT_DIR)  # once, before modules that use it run side by side
        modules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
        t0 = time.time()
        runs = run_modules(modules, args, jobs, Path(tmp))
    minutes = (time.time() - t0) / 60
    totals: collections.Counter[str] = collections.Counter()
    for run in runs:
        totals.update(run.state.get("counts") or {})
    crashed = [r.module for r in runs if crash_line(r.code, r.state)]
    failed_modules = sorted(r.module for r in runs if r.code > 0 and r.code != NO_TESTS_COLLECTED)
    summary = ", ".join(f"{totals[k]} {k}" for k in ("passed", "failed", "skipped") if k in ("passed", "failed")
                        or totals[k])
    extra = [f"{totals['error']} errors"] if totals["error"] else []
    extra += [f"{len(crashed)} modules crashed ({', '.join(crashed)})"] if crashed else []
    slowest = sorted(runs, key=lambda r: -r.wall_s)[:5]
    print(f"\n{len(modules)} modules in {minutes:.1f} min, {jobs} at a time; slowest: "
          + ", ".join(f"{Path(r.module).stem} {r.wall_s / 60:.1f}" for r in slowest)
          + (f"; failing: {', '.join(failed_modules)}" if failed_modules else ""))
    print(summary + (", " + ", ".join(extra) if extra else ""), flush=True)
    return 1 if crashed or failed_modules or totals["failed"] or totals["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
