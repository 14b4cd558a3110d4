"""`make device-check`: the runtime on an emulated Raspberry Pi OS-equivalent system, against the same artifacts
on this x86 machine.

What it builds (once, cached under ``.device/``, git-ignored):

- a Debian bookworm arm64 root filesystem (Raspberry Pi OS's base; Python 3.11) from Debian's own packages:
  ``debootstrap --foreign`` downloads and unpacks the base system plus python3, and every downloaded package is
  unpacked on this machine (no maintainer scripts need to run: nothing is booted, the emulated Python only
  needs the files). It is marked complete only after its Python has run under emulation; a tree without the
  mark (an interrupted build, a deleted file) is removed and rebuilt, never half-used.
- the runtime wheel (``pip wheel ./runtime``) and aarch64 wheels of its dependencies, installed for aarch64 by
  this machine's pip (``--platform manylinux..._aarch64 --target``), at the versions a device gets from the
  registry: ai-edge-litert's newest aarch64 wheel is 1.4.0 while this machine runs 2.1.0.

``qemu-aarch64-static -cpu CPU -L ROOT`` then runs that Python, which sees only the wheel's ``runtime`` package:
the repository is not on its path. CPU is the board's (``--board``: a Pi 5's Cortex-A76 or a Pi 4's A72), whose
capabilities the int8 kernels choose their instructions by. ``benchmarks/device_dump.py`` writes each artifact's
raw outputs and detections on both sides; they are compared here, and on a labelled split (``--data``) scored
by ``benchmarks/device_accuracy.py``. Why qemu-user and not a chroot: a chroot needs binfmt_misc
registration, which containers (this machine, CI) do not allow; ``-L`` needs nothing but the binary.

Emulated timings are kept only to show the runtime's bench runs there; they are marked ``emulated`` and are
never device latency.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".device" / "aarch64-bookworm"
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
PYTHON_IN_ROOTFS = "usr/bin/python3.11"
# What a Raspberry Pi (aarch64, Python 3.11) gets from the registry; the newest with aarch64 wheels where
# the build machine's version has none (ai-edge-litert 2.x ships x86-64 only; the registry's newest aarch64
# OpenVINO is 2025.2.0, which reads the IR the build machine's 2026.4.1 writes: session 31).
DEVICE_PACKAGES = {"numpy": "1.26.4", "opencv-python-headless": "4.11.0.86", "onnxruntime": "1.23.0",
                   "ai-edge-litert": "1.4.0", "openvino": "2025.2.0"}
AARCH64_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64",
                     "manylinux_2_31_aarch64")
# The CPU qemu emulates, by the board it stands for. Its capability bits (AT_HWCAP) are what the int8 kernels
# dispatch on, so the boards' int8 paths differ (the A76 has dot-product instructions, the A72 none). qemu's
# default "max" CPU is not used: OpenVINO's JIT died on it with an illegal instruction (qemu 7.2, session 31).
EMULATED_CPUS = {"pi5": ("cortex-a76", "Raspberry Pi 5 (Cortex-A76, dot product)"),
                 "pi4": ("cortex-a72", "Raspberry Pi 4 (Cortex-A72, no dot product)")}
MIN_FREE_BYTES = 2 * 1024 ** 3  # rootfs ~0.4 GB + wheels and site ~0.5 GB, with room
COMPLETE = ".device-check-complete"
DEFAULT_MODELS = ("exports/d0-device/efficientdet-d0-256-int8.tflite",
                  "exports/d0-device/efficientdet-d0-256-int8.onnx",
                  "exports/d0-device/efficientdet-d0-256-fp32.onnx")
CORAL_STEPS = """Coral Edge TPU (not emulable here: edgetpu_compiler and the Edge TPU runtime cannot be installed on
this machine). On a machine with the Coral repository:
  1. make edgetpu PHI=0                       # uint8-I/O int8 TFLite + op check; compiles where edgetpu_compiler exists
  2. copy exports/d0-edgetpu/*_edgetpu.tflite and its .json manifest to the board
  3. on the board: pip install ./runtime[tflite] && apt install libedgetpu1-std
  4. python -m runtime bench MODEL_edgetpu.tflite --edgetpu --out coral.json --device coral-usb
  5. back here: make report DEVICE_RESULTS=coral.json"""


class DeviceCheckError(RuntimeError):
    """A prerequisite is missing or the emulated system cannot be built (exit 2)."""


def _run(cmd: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise DeviceCheckError(f"{what} failed (exit {result.returncode}): {' | '.join(tail)}")
    return result


def qemu_binary() -> str:
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        found = shutil.which(name)
        if found:
            return found
    raise DeviceCheckError("qemu-aarch64-static not found: install Debian's qemu-user-static "
                           "(`sudo apt-get install qemu-user-static debootstrap`)")


def check_space(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise DeviceCheckError(f"{folder}: {free / 1e9:.1f} GB free, the emulated system needs "
                               f"{MIN_FREE_BYTES / 1e9:.1f} GB: free space or move the checkout")


def rootfs_ok(root: Path) -> bool:
    return (root / COMPLETE).is_file() and (root / PYTHON_IN_ROOTFS).is_file()


def build_rootfs(cache: Path = CACHE, log=print) -> Path:
    """The unpacked arm64 bookworm tree (built on first use; a tree without its completion mark is rebuilt)."""
    root = cache / "rootfs"
    if rootfs_ok(root):
        return root
    if shutil.which("debootstrap") is None:
        raise DeviceCheckError("debootstrap not found: install Debian's debootstrap "
                               "(`sudo apt-get install debootstrap qemu-user-static`)")
    qemu = qemu_binary()
    check_space(cache)
    if root.exists():
        log(f"{root} is incomplete (an interrupted build or a removed file): rebuilding it")
        shutil.rmtree(root)
    partial = cache / "rootfs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    log(f"building Debian {SUITE} arm64 in {root} (debootstrap --foreign, ~1 min and ~100 MB of downloads)")
    _run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", "--include=python3", SUITE,
          str(partial), MIRROR], "debootstrap")
    debs = sorted((partial / "var/cache/apt/archives").glob("*.deb"))
    for deb in debs:  # the base set is unpacked by debootstrap; python3 and its libraries are not yet
        _run(["dpkg-deb", "-x", str(deb), str(partial)], f"unpacking {deb.name}")
    probe = _run([qemu, "-L", str(partial), str(partial / PYTHON_IN_ROOTFS), "-c",
                  "import platform, sys; print(platform.machine(), sys.version.split()[0])"],
                 "running the emulated Python").stdout.split()
    if probe[:1] != ["aarch64"]:
        raise DeviceCheckError(f"the emulated Python reports {probe}, not aarch64")
    (partial / COMPLETE).write_text(json.dumps({"suite": SUITE, "mirror": MIRROR, "python": probe[1],
                                                "packages": [d.name for d in debs]}, indent=1))
    partial.rename(root)
    return root


def install_site(cache: Path = CACHE, log=print) -> tuple[Path, dict[str, str]]:
    """The runtime wheel and its aarch64 dependencies installed into a folder the emulated Python imports."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    for old in wheels.glob("efficientdet_runtime-*.whl"):
        old.unlink()
    _run(pip + ["wheel", "--no-deps", "-w", str(wheels), str(ROOT / "runtime")], "building the runtime wheel")
    runtime_wheel = next(wheels.glob("efficientdet_runtime-*.whl"))
    # Keyed on the runtime's sources and the pins (a rebuilt wheel's bytes differ by timestamps alone).
    sources = sorted((ROOT / "runtime").rglob("*.py")) + [ROOT / "runtime/pyproject.toml"]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in sources) + json.dumps(DEVICE_PACKAGES).encode())
    digest = digest.hexdigest()[:16]
    site = cache / f"site-{digest}"
    if not (site / COMPLETE).is_file():
        log("installing the runtime wheel and aarch64 wheels of " + ", ".join(f"{k}=={v}" for k, v in
                                                                               DEVICE_PACKAGES.items()))
        shutil.rmtree(site, ignore_errors=True)
        platform_flags = [f for p in AARCH64_PLATFORMS for f in ("--platform", p)]
        target = ["--only-binary=:all:", *platform_flags, "--python-version", "3.11", "--implementation", "cp"]
        pins = [f"{k}=={v}" for k, v in DEVICE_PACKAGES.items()]
        _run(pip + ["download", "-d", str(wheels), *target, *pins], "downloading aarch64 wheels")
        _run(pip + ["install", "--no-warn-conflicts", "--no-index", "--find-links", str(wheels), "--target", str(site),
                    *target, str(runtime_wheel), *pins], "installing for aarch64")
        (site / COMPLETE).write_text(runtime_wheel.name)
        for old in cache.glob("site-*"):
            if old != site:
                shutil.rmtree(old, ignore_errors=True)
    return site, dict(DEVICE_PACKAGES)


@dataclass(frozen=True)
class Emulator:
    qemu: str
    root: Path
    site: Path
    board: str = "pi5"  # a key of EMULATED_CPUS

    def python(self, args: list[str], timeout: float = 3600) -> subprocess.CompletedProcess:
        """The emulated Python in a scratch folder, importing only the installed wheels (not this checkout)."""
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(self.site), "PYTHONNOUSERSITE": "1", "HOME": "/tmp",
               "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
        with tempfile.TemporaryDirectory() as scratch:
            return subprocess.run([self.qemu, "-cpu", EMULATED_CPUS[self.board][0], "-L", str(self.root),
                                   str(self.root / PYTHON_IN_ROOTFS), *args],
                                  capture_output=True, text=True, env=env, cwd=scratch, timeout=timeout)


def load_dump(path: Path) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    with np.load(path) as z:
        info = json.loads(bytes(z["info"]).decode())
        per_image = [{k: z[f"{k}_{i}"] for k in ("logits", "deltas", "boxes", "scores", "classes")}
                     for i in range(len(info["images"]))]
    return info, per_image


def compare(host: list[dict[str, np.ndarray]], device: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Raw-output error (max abs, and max abs / max |host| as in the parity gate) and detections matched both ways."""
    from convert.matching import match_count
    from runtime.postprocess import Detections

    out: dict[str, Any] = {}
    for key, name in (("logits", "logits"), ("deltas", "box_regression")):
        diff = max(float(np.abs(h[key] - d[key]).max()) for h, d in zip(host, device))
        scale = max(float(np.abs(h[key]).max()) for h in host)
        out[name] = {"max_abs_err": diff, "rel_err": diff / scale if scale else 0.0}
    counts = {"host": 0, "device": 0}
    matched = {0.5: [0, 0], 0.99: [0, 0]}
    for h, d in zip(host, device):
        hd = Detections(h["boxes"], h["scores"], h["classes"])
        dd = Detections(d["boxes"], d["scores"], d["classes"])
        counts["host"] += len(hd)
        counts["device"] += len(dd)
        for iou in matched:
            matched[iou][0] += match_count(hd, dd, iou)
            matched[iou][1] += match_count(dd, hd, iou)
    out["detections"] = counts
    for iou, (fwd, back) in matched.items():
        out[f"matched_iou{iou}"] = {"host_in_device": fwd / counts["host"] if counts["host"] else 1.0,
                                    "device_in_host": back / counts["device"] if counts["device"] else 1.0}
    return out


def ensure_models(models: list[Path], log=print) -> None:
    """The default artifacts are exported when absent (the default model: int8 TFLite, int8 and fp32 ONNX)."""
    missing = [m for m in models if not m.is_file()]
    if not missing:
        return
    if [str(m) for m in models] != [str(ROOT / d) for d in DEFAULT_MODELS]:
        raise DeviceCheckError(f"MODELS: {', '.join(map(str, missing))} not found (export them first)")
    log("exporting the default model's int8 TFLite, int8 ONNX and fp32 ONNX to exports/d0-device")
    result = subprocess.run([sys.executable, "-m", "convert", "--target", "tflite,onnx", "--precision", "fp32,int8",
                             "--out", str(ROOT / "exports/d0-device"), "--max-images", "20"], cwd=ROOT)
    if any(not m.is_file() for m in models):
        raise DeviceCheckError(f"the export of the default artifacts failed (exit {result.returncode})")


def default_images(n: int) -> list[Path]:
    folder = ROOT / "data/synthetic/images/val"
    images = sorted(folder.glob("*.jpg"))[:n]
    if len(images) < n:
        raise DeviceCheckError(f"{folder} has {len(images)} images; run `make data` or give IMAGES=")
    return images


def _points(value: float) -> str:
    return f"{value * 100:+.2f}"


def accuracy_lines(doc: dict[str, Any]) -> list[str]:
    """The mAP table of a run on a labelled split (none without one)."""
    scored = [a for a in doc["artifacts"] if "accuracy" in a]
    if not scored:
        return []
    first = scored[0]["accuracy"]
    lines = ["", f"mAP@[.5:.95] on {first['source']} split `{first['split']}` ({first['images']} images), each side's "
             "raw outputs post-processed as the export's gate does; aarch64 − x86 in points with its 95 % paired "
             "bootstrap interval over the images; against FP32 = the FP32 PyTorch model's mAP from the export's "
             "report.json; x86 = gate: the host reproduced the gate's recorded mAP for these bytes.", "",
             "| artifact | x86 mAP | aarch64 mAP | aarch64 − x86 (95 % interval) | vs FP32 x86 / aarch64 "
             "| x86 = gate |",
             "|---|---:|---:|---:|---:|---|"]
    for a in scored:
        acc = a["accuracy"]
        iv = acc["map_delta_interval"]
        vs = acc.get("map_delta_vs_fp32")
        same = acc.get("host_reproduces_gate")
        lines.append(f"| {a['name']} | {acc['map_x86']:.4f} | {acc['map_aarch64']:.4f} "
                     f"| {_points(acc['map_delta_aarch64_vs_x86'])} ({_points(iv['low'])} … {_points(iv['high'])}) "
                     f"| {'—' if vs is None else _points(vs['x86']) + ' / ' + _points(vs['aarch64'])} "
                     f"| {'—' if same is None else 'yes' if same else 'NO'} |")
    return lines


def markdown(doc: dict[str, Any], command: str) -> str:
    images = (f"{doc['images']} images of {doc['data']['source']} split {doc['data']['split']}" if doc.get("data")
              else f"{doc['images']} images of the embedded synthetic validation split")
    lines = ["# Runtime on aarch64 (Debian bookworm arm64 under qemu-user) vs this x86 machine", "",
             f"Command: `{command}`. Emulated system: Debian {SUITE} arm64 on qemu's {doc['device']['cpu']} "
             f"({EMULATED_CPUS[doc['device']['board']][1]}; the runtime read its int8 class as "
             f"{doc['device']['int8_class']}), Python {doc['device']['python']}, "
             f"{', '.join(f'{k} {v}' for k, v in doc['device']['versions'].items())}. Host: "
             f"{doc['host']['cpu']} ({doc['host']['cpu_class']}), "
             f"{', '.join(f'{k} {v}' for k, v in doc['host']['versions'].items())}. "
             f"{images}, one thread.", "",
             "Raw outputs: max |aarch64 − x86| (and that over max |x86|). Detections: matched one-to-one, same class, "
             "at IoU ≥ 0.5 and ≥ 0.99, x86 → aarch64 / aarch64 → x86.", "",
             "| artifact | logits max abs (rel) | boxes max abs (rel) | detections x86 / aarch64 | matched IoU≥0.5 "
             "| matched IoU≥0.99 |", "|---|---:|---:|---:|---:|---:|"]
    for a in doc["artifacts"]:
        p = a["parity"]
        lines.append(
            f"| {a['name']} | {p['logits']['max_abs_err']:.2e} ({p['logits']['rel_err']:.1e}) "
            f"| {p['box_regression']['max_abs_err']:.2e} ({p['box_regression']['rel_err']:.1e}) "
            f"| {p['detections']['host']} / {p['detections']['device']} "
            f"| {p['matched_iou0.5']['host_in_device']:.1%} / {p['matched_iou0.5']['device_in_host']:.1%} "
            f"| {p['matched_iou0.99']['host_in_device']:.1%} / {p['matched_iou0.99']['device_in_host']:.1%} |")
    versus = [a for a in doc["artifacts"] if "vs_fp32" in a]
    if versus:
        lines += ["", "Each int8 artifact against the fp32 artifact on the same machine (detections matched at "
                  "IoU ≥ 0.5, fp32 → int8 / int8 → fp32; logits rel err):", "",
                  "| artifact | x86 matched | x86 logits rel | aarch64 matched | aarch64 logits rel |",
                  "|---|---:|---:|---:|---:|"]
        for a in versus:
            x, d = a["vs_fp32"]["x86"], a["vs_fp32"]["aarch64"]
            lines.append(f"| {a['name']} | {x['matched_iou0.5']['host_in_device']:.1%} / "
                         f"{x['matched_iou0.5']['device_in_host']:.1%} | {x['logits']['rel_err']:.3f} "
                         f"| {d['matched_iou0.5']['host_in_device']:.1%} / {d['matched_iou0.5']['device_in_host']:.1%} "
                         f"| {d['logits']['rel_err']:.3f} |")
    lines += accuracy_lines(doc)
    lines += ["", "Emulated timings (qemu-user translates every instruction: **not device latency**, only proof that "
              "`python -m runtime bench` runs there):", "", "| row | device | total ms (emulated) |", "|---|---|---:|"]
    lines += [f"| {r['name']} | {r['device']} | {r['total_ms']:.0f} |" for r in doc["rows"]]
    lines += ["", *[f"- {n}" for n in doc["notes"]], "", "## Coral", "", "```", CORAL_STEPS, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", default=None, help="artifacts (default: the default model's int8 TFLite, "
                   "int8 ONNX and fp32 ONNX, exported when absent)")
    p.add_argument("--images", nargs="*", default=None, help="images (default: 4 of the synthetic val split)")
    p.add_argument("--data", default=None, help="a labelled dataset: run on its --split and score every artifact's "
                   "mAP on both sides (instead of --images)")
    p.add_argument("--split", default="test", help="the split of --data (default: test)")
    p.add_argument("--max-images", type=int, default=0, help="the first N images of the split (0: all)")
    p.add_argument("--out", default=str(ROOT / "results/device-check-aarch64"), help="results path without suffix")
    p.add_argument("--bench-runs", type=int, default=3)
    p.add_argument("--board", choices=sorted(EMULATED_CPUS), default="pi5", help="the board whose CPU qemu "
                   "emulates: " + "; ".join(f"{k}: {v[1]}" for k, v in EMULATED_CPUS.items()))
    p.add_argument("--command", default=None, help="the command the results file names (default: make device-check)")
    p.add_argument("--note", default="", help="a note on the run, added to the results' notes")
    args = p.parse_args(argv)
    from runtime.bench import RESULTS_SCHEMA, machine_info, package_versions
    from runtime.cpu_class import cpu_class
    from runtime.fileio import atomic_write_bytes, atomic_write_json, file_sha256

    from .device_accuracy import labelled_split, split_accuracy

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.time()
    try:
        models = [Path(m).resolve() for m in (args.models or [ROOT / d for d in DEFAULT_MODELS])]
        if args.data and args.images:
            raise DeviceCheckError("give --data (a labelled split, scored) or --images (unlabelled), not both")
        ensure_models(models, log)
        dataset = labelled_split(models, args.data, args.split, args.max_images) if args.data else None
        images = ([Path(r.path) for r in dataset.records] if dataset is not None
                  else [Path(i).resolve() for i in (args.images or default_images(4))])
        emulator = Emulator(qemu_binary(), build_rootfs(log=log), install_site(log=log)[0], args.board)
    except (DeviceCheckError, ValueError) as e:  # ValueError: the labelled split (DatasetError) or its classes
        print(f"error: {e}", file=sys.stderr)
        return 2
    dump = ROOT / "benchmarks/device_dump.py"
    entries, rows, device_info = [], [], {}
    dumps: dict[str, tuple[list, list]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            log(f"{model.name}: x86, then aarch64 (emulated)")
            host_npz, dev_npz = Path(tmp) / "host.npz", Path(tmp) / "device.npz"
            subprocess.run([sys.executable, str(dump), str(model), str(host_npz), *map(str, images)], check=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
            run = emulator.python([str(dump), str(model), str(dev_npz), *map(str, images)])
            if run.returncode != 0:
                print(f"error: {model.name} failed on aarch64:\n{run.stderr[-3000:]}", file=sys.stderr)
                return 1
            _, host = load_dump(host_npz)
            device_info, device = load_dump(dev_npz)
            dumps[model.name] = (host, device)
            entries.append({"name": model.name, "path": str(model.relative_to(ROOT) if model.is_relative_to(ROOT)
                                                               else model),
                            "sha256": file_sha256(model),
                            "backend_on_device": device_info["backend"], "warnings_on_device": device_info["warnings"],
                            "parity": compare(host, device)})
            if dataset is not None:
                log(f"{model.name}: scoring both sides on {len(images)} images")
                entries[-1]["accuracy"] = split_accuracy(model, dataset, host, device, entries[-1]["sha256"])
            bench = emulator.python(["-m", "runtime", "bench", str(model), "--threads", "1", "--runs",
                                     str(args.bench_runs), "--warmup", "1", "--json", "--device", "qemu-aarch64"])
            if bench.returncode != 0:
                print(f"error: runtime bench of {model.name} failed on aarch64:\n{bench.stderr[-3000:]}",
                      file=sys.stderr)
                return 1
            row = json.loads(bench.stdout.strip().splitlines()[-1])
            # The row is the emulated CPU's: its own int8 class, and the accuracy measured there where a labelled
            # split was run, so `make report` never gives it the x86 gate's (this file's "machine" is the host).
            accuracy = entries[-1].get("accuracy") or {}
            measured = {"map": accuracy["map_aarch64"],
                        "map_delta": (accuracy.get("map_delta_vs_fp32") or {}).get("aarch64")} if accuracy else {}
            rows.append({**row, **measured, "emulated": True, "int8_class": device_info.get("int8_class"),
                         "device": f"qemu-aarch64 {EMULATED_CPUS[args.board][0]} (emulated, not device latency)"})
    fp32 = next((dumps[e["name"]] for e in entries if "-fp32." in e["name"]), None)
    for e in entries:  # each side against its own fp32 run: which side's int8 kernels keep the float model's result
        if fp32 is not None and "-fp32." not in e["name"]:
            host, device = dumps[e["name"]]
            e["vs_fp32"] = {"x86": compare(fp32[0], host), "aarch64": compare(fp32[1], device)}
    here = cpu_class()
    doc = {"schema": RESULTS_SCHEMA, "machine": machine_info(), "versions": package_versions(),
           "host": {"cpu": here.model, "cpu_class": here.int8, "versions": {
               k: v for k, v in package_versions().items() if k in DEVICE_PACKAGES}},
           "device": {"system": f"Debian {SUITE} arm64 under {Path(emulator.qemu).name}",
                      "board": args.board, "cpu": EMULATED_CPUS[args.board][0],
                      "int8_class": device_info.get("int8_class"),
                      "python": device_info.get("python"), "versions": {
                          k: v for k, v in device_info.get("versions", {}).items() if k in DEVICE_PACKAGES}},
           "images": len(images), "artifacts": entries,
           "data": None if dataset is None else {"source": dataset.source, "split": dataset.split},
           "rows": rows, "wall_time_s": round(time.time() - t0, 1),
           "notes": ["Emulated rows are marked `emulated`; `make report DEVICE_RESULTS=` shows them as such. Each "
                     "carries the emulated CPU's int8 class and, on a labelled split, the mAP measured there, so "
                     "the report never gives an int8 row this machine's accuracy.",
                     "int8 kernels differ by CPU architecture and, on x86, by CPU class (docs/INT8-CPU-CLASSES.md); "
                     "the second table shows which side keeps the fp32 artifact's result. fp32 rows differ only by "
                     "summation order.", *([args.note.strip()] if args.note.strip() else [])]}
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), doc)
    command = args.command or "make device-check" + (" MODELS=..." if args.models else "")
    atomic_write_bytes(out.with_suffix(".md"), markdown(doc, command).encode())
    print(markdown(doc, command))
    print(CORAL_STEPS, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
