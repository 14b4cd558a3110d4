"""Nothing phones home: OpenVINO use in the runtime and the toolchain makes no network attempt and writes nothing
in ``$HOME`` (docs/PRIVACY-NETWORK.md).

Each workload runs in a fresh child process (telemetry is per process, and NNCF silences itself when pytest is
imported) with ``HOME`` a new empty folder and the CI markers that also silence OpenVINO telemetry removed, under

* a Python audit hook recording socket and urllib events (forked sender processes inherit it), always; and
* ``strace -f -e trace=network`` (every process, including the forked sender), when strace can run here
  (Debian/Ubuntu package ``strace``); otherwise those tests skip and say why.

Workloads: the runtime (``runtime.Detector`` loads an OpenVINO IR and detects one image) and the toolchain
(``convert.targets.openvino.convert_onnx`` = ``openvino.convert_model`` of a tiny ONNX, then
``quantize.openvino_int8.quantize_openvino`` = ``nncf.quantize``, then ``openvino.save_model``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT

SIZE = 128
NAMES = ["a", "b", "c"]
# Variables that make openvino-telemetry / NNCF stay silent on their own: removed so the test proves our switch.
SILENCERS = ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI", "NNCF_DEV")
ATTEMPTS = {"connect", "sendto", "sendmsg", "sendmmsg"}  # syscalls that reach out (a DNS query is one of these)

# Installed in the child before the workload: append every network-related audit event to PRIVACY_AUDIT_LOG.
AUDIT_PRELUDE = textwrap.dedent("""
    import os, runpy, sys
    _fd = os.open(os.environ["PRIVACY_AUDIT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    _EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
               "socket.sendto", "socket.sendmsg", "socket.bind", "socket.getnameinfo", "urllib.Request",
               "http.client.connect", "http.client.send", "ftplib.connect", "smtplib.connect"}
    def _hook(event, args):
        if event in _EVENTS:
            shown = [a for a in args if not hasattr(a, "fileno")]  # drop the socket object itself
            os.write(_fd, f"{os.getpid()} {event} {shown!r}\\n".encode())
    sys.addaudithook(_hook)
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.getcwd())
    runpy.run_path(script, run_name="__main__")
""")

RUNTIME_CHILD = textwrap.dedent("""
    import sys
    from runtime import Detector

    det = Detector(sys.argv[1], threads=1)
    result = det.detect_file(sys.argv[2])
    print("runtime ok:", det.backend.name, type(result).__name__, "telemetry module:",
          sys.modules.get("openvino_telemetry"))
""")

TOOLCHAIN_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path

    import numpy as np

    from calib_data import CalibrationSet
    from convert.targets.openvino import convert_onnx
    from quantize.openvino_int8 import quantize_openvino
    from runtime.backends.openvino_privacy import import_openvino

    onnx_path, out, size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    model = convert_onnx(onnx_path)
    images = np.random.default_rng(0).random((2, size, size, 3), dtype=np.float32)
    quantized = quantize_openvino(model, CalibrationSet(onnx_path, images, {}), "mixed")
    import_openvino().save_model(quantized, str(out / "int8.xml"))
    ops = sorted({op.get_type_name() for op in quantized.get_ops()})
    print("toolchain ok:", "FakeQuantize" in ops, "telemetry module:", sys.modules.get("openvino_telemetry"))
""")


class Traced(NamedTuple):
    audit: list[str]  # audit-hook lines "pid event args"
    strace: list[str] | None  # network syscalls seen by strace, None when strace could not run
    strace_reason: str  # why strace did not run
    home_files: list[str]  # paths created under the child's $HOME
    output: str


def strace_usable() -> tuple[str | None, str]:
    """(path to strace, "") when it can trace a child here, else (None, reason)."""
    exe = shutil.which("strace")
    if exe is None:
        return None, "strace is not installed (Debian/Ubuntu: apt-get install -y strace)"
    probe = subprocess.run([exe, "-f", "-qq", "-e", "trace=network", "-o", os.devnull, "true"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return None, f"strace cannot trace here (ptrace not permitted?): {probe.stderr.strip()[:300]}"
    return exe, ""


SYSCALL = re.compile(r"^(?:\[pid\s+\d+\]\s*|\d+\s+)?(?:<\.\.\. )?([a-z_0-9]+)[( ]")


def network_syscalls(trace: str) -> list[str]:
    """The syscall lines of an ``strace -e trace=network`` log (signal, exit and ``<... resumed>`` lines dropped)."""
    lines = []
    for line in trace.splitlines():
        m = SYSCALL.match(line.strip())
        if m and "resumed>" not in line and not line.lstrip("0123456789 ").startswith(("---", "+++")):
            lines.append(line.strip())
    return lines


def run_traced(script: str, args: list[str], tmp: Path) -> Traced:
    """Run ``script`` in a child with an empty ``$HOME``, the audit hook, and strace when usable."""
    home = tmp / "home"
    home.mkdir()
    script_path = tmp / "child.py"
    script_path.write_text(script)
    audit_log = tmp / "audit.log"
    audit_log.touch()
    env = {k: v for k, v in os.environ.items() if k not in SILENCERS and not k.startswith("XDG_")}
    env.update(HOME=str(home), PRIVACY_AUDIT_LOG=str(audit_log), PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cmd = [sys.executable, "-c", AUDIT_PRELUDE, str(script_path), *args]
    strace, reason = strace_usable()
    trace_log = tmp / "strace.log"
    if strace is not None:
        cmd = [strace, "-f", "-qq", "-e", "trace=network", "-o", str(trace_log), *cmd]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{output[-4000:]}"
    home_files = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    calls = network_syscalls(trace_log.read_text()) if strace is not None else None
    return Traced(audit_log.read_text().splitlines(), calls, reason, home_files, output)


def tiny_onnx(path: Path, num_anchors: int) -> None:
    """images [1,3,S,S] -> Conv/Relu/GlobalAveragePool -> MatMul + per-anchor bias -> logits, box_regression."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def const(name: str, value: np.ndarray) -> TensorProto:
        return numpy_helper.from_array(value.astype(np.float32), name)

    inits = [const("w", rng.normal(size=(8, 3, 3, 3)) * 0.3), const("b", rng.normal(size=8) * 0.1),
             const("wc", rng.normal(size=(8, len(NAMES)))), const("bc", rng.normal(size=(1, num_anchors, len(NAMES)))),
             const("wb", rng.normal(size=(8, 4)) * 0.1), const("bb", rng.normal(size=(1, num_anchors, 4)) * 0.1),
             numpy_helper.from_array(np.array([1, 1, 8], dtype=np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["images", "w", "b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
             helper.make_node("Reshape", ["pool", "shape"], ["feat"]),
             helper.make_node("MatMul", ["feat", "wc"], ["cls"]),
             helper.make_node("Add", ["cls", "bc"], ["logits"]),
             helper.make_node("MatMul", ["feat", "wb"], ["box"]),
             helper.make_node("Add", ["box", "bb"], ["box_regression"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, num_anchors, len(NAMES)]),
         helper.make_tensor_value_info("box_regression", TensorProto.FLOAT, [1, num_anchors, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny ONNX, its OpenVINO IR with the exporter's manifest, and a test image."""
    from convert.manifest_writer import build_manifest
    from efficientdet.model.config import make_config
    from runtime.backends.openvino_privacy import import_openvino
    from runtime.manifest import file_sha256, write_sidecar
    from tests.runtime_artifacts import float_io

    ov = import_openvino()
    out = tmp_path_factory.mktemp("privacy")
    config = make_config("0", "lite", num_classes=len(NAMES), class_names=NAMES, input_size=SIZE)
    onnx_path = out / "tiny.onnx"
    tiny_onnx(onnx_path, config.num_anchors)
    xml_path = out / "tiny.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    inp, outs = float_io(config)
    manifest = build_manifest(config, target="openvino", precision="fp32", artifact_file=xml_path.name,
                              input_spec=inp, outputs=outs, sha256=file_sha256(xml_path), inference_precision="f32")
    manifest["artifact"]["weights_sha256"] = file_sha256(xml_path.with_suffix(".bin"))
    write_sidecar(xml_path, manifest)
    image = out / "image.png"
    rng = np.random.default_rng(1)
    cv2.imwrite(str(image), cv2.GaussianBlur(rng.integers(0, 256, (150, 220, 3), dtype=np.uint8), (5, 5), 0))
    return {"onnx": onnx_path, "xml": xml_path, "image": image}


@pytest.fixture(scope="module")
def runtime_run(model_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Traced:
    traced = run_traced(RUNTIME_CHILD, [str(model_files["xml"]), str(model_files["image"])],
                        tmp_path_factory.mktemp("runtime-child"))
    assert "runtime ok: openvino" in traced.output, traced.output[-2000:]
    return traced


@pytest.fixture(scope="module")
def toolchain_run(model_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Traced:
    tmp = tmp_path_factory.mktemp("toolchain-child")
    traced = run_traced(TOOLCHAIN_CHILD, [str(model_files["onnx"]), str(tmp), str(SIZE)], tmp)
    assert "toolchain ok: True" in traced.output, traced.output[-2000:]  # NNCF really quantized something
    assert (tmp / "int8.xml").is_file()
    return traced


RUNS = ["runtime_run", "toolchain_run"]


@pytest.mark.parametrize("run", RUNS)
def test_no_network_events_in_python(run: str, request: pytest.FixtureRequest) -> None:
    traced: Traced = request.getfixturevalue(run)
    assert traced.audit == [], f"{len(traced.audit)} network audit events:\n" + "\n".join(traced.audit[:40])


@pytest.mark.parametrize("run", RUNS)
def test_no_network_syscalls(run: str, request: pytest.FixtureRequest) -> None:
    traced: Traced = request.getfixturevalue(run)
    if traced.strace is None:
        pytest.skip(traced.strace_reason)
    attempts = [line for line in traced.strace if SYSCALL.match(line) and SYSCALL.match(line)[1] in ATTEMPTS]
    assert attempts == [], f"{len(attempts)} network attempts:\n" + "\n".join(attempts[:40])
    assert traced.strace == [], "network syscalls (no attempt, but nothing at all is expected):\n" + "\n".join(
        traced.strace[:40])


@pytest.mark.parametrize("run", RUNS)
def test_nothing_written_in_home(run: str, request: pytest.FixtureRequest) -> None:
    traced: Traced = request.getfixturevalue(run)
    assert traced.home_files == [], f"files created under $HOME: {traced.home_files}"


def test_disable_telemetry_blocks_the_package(tmp_path: Path) -> None:
    """The mechanism itself, in a clean child: openvino and nncf fall back to their no-op telemetry stubs."""
    code = textwrap.dedent("""
        from runtime.backends.openvino_privacy import disable_telemetry, import_nncf, import_openvino
        assert disable_telemetry() is True
        ov = import_openvino()
        import openvino.tools.ovc.telemetry_utils as tu
        assert tu.tm.__name__ == "openvino.tools.ovc.telemetry_stub", tu.tm
        import_nncf()
        from nncf.telemetry import wrapper
        assert type(wrapper.telemetry).__name__ == "MagicMock", type(wrapper.telemetry)  # NNCFTelemetryStub
        assert disable_telemetry() is True
        print("stubs ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if k not in SILENCERS}, "HOME": str(tmp_path),
                               "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and "stubs ok" in proc.stdout, proc.stdout + proc.stderr
    assert not any(tmp_path.iterdir()), list(tmp_path.rglob("*"))


def test_late_call_reports_it_is_too_late() -> None:
    code = textwrap.dedent("""
        import sys, types
        sys.modules["openvino_telemetry"] = types.ModuleType("openvino_telemetry")  # as if imported already
        from runtime.backends.openvino_privacy import disable_telemetry
        assert disable_telemetry() is False
        print("late ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and "late ok" in proc.stdout, proc.stdout + proc.stderr
    assert "telemetry may be active" in proc.stderr
