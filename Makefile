# EfficientDet edge pipeline. `make help` lists the targets.
SHELL := /bin/bash
PYTHON_SYS ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# The venv is keyed on the lock file's content, not its date: a fresh clone (whose files are all newer
# than an existing venv) does not reinstall, and any change to the pins does.
LOCK_SHA := $(shell sha256sum requirements/lock.txt 2>/dev/null | cut -c1-16)
STAMP := $(VENV)/.installed-$(LOCK_SHA)
# The TFLite Task Library's own environment (make android-check): it cannot share .venv with TensorFlow
# (requirements/task-library.txt says why).
TASK_VENV := .venv-task-library
TASK_STAMP := $(TASK_VENV)/.installed-$(shell sha256sum requirements/task-library.txt 2>/dev/null | cut -c1-16)

PHI ?= 0
VARIANT ?= d
NUM_CLASSES ?= 90
DATA ?= data/synthetic
EPOCHS ?= 50
BATCH ?= 8
INPUT_SIZE ?=
INIT ?=
OUT ?= runs/$(VARIANT)$(PHI)
CKPT ?=
SPLIT ?= test
BCCD ?= ../shared/datasets/bccd

size_flag = $(if $(INPUT_SIZE),--input-size $(INPUT_SIZE),)
# CLASS_MAP=DATA_NAME=MODEL_NAME,...: score a model on a dataset whose class names differ (eval, export)
CLASS_MAP ?=
class_map_flag = $(if $(CLASS_MAP),--class-map "$(CLASS_MAP)",)
# make eval writes its JSON under runs/eval/ (never beside the checkpoint, e.g. into the committed models/)
EVAL_OUT ?=
exclude_flag = $(if $(EXCLUDE),--exclude-images "$(EXCLUDE)",)
eval_out = $(or $(EVAL_OUT),runs/eval/$(basename $(notdir $(CKPT)))-$(SPLIT).json)

TARGET ?= all
PRECISION ?=
EXPORT_SPLIT ?= val
QAT ?=
CALIB ?=
CALIB_METHOD ?=
IO_DTYPE ?= int8
FLOAT_LAYERS ?= 0
# INT8_INPUT=pixels|normalised: what post-training int8 files take (empty: python -m convert's default)
INT8_INPUT ?=
N ?= 200
EDGETPU_MIN ?= 0.95
# ANDROID=1 (make export TARGET=tflite): also the -android.tflite for MediaPipe / the TFLite Task Library
ANDROID ?=
# make bench / report / example
TARGETS ?= all
THREADS ?= 1,2
QUICK ?=
BENCH_OUT ?= bench
DEVICE_RESULTS ?=
REPORT ?=
# OUT defaults to runs/... for training; exports go to exports/... unless OUT is given
export_out = $(if $(filter command line environment,$(origin OUT)),$(OUT),exports/$(VARIANT)$(PHI))

.PHONY: help setup test test-quick lint summary train audit-labels import-effdet split eval export calib edgetpu data clean bench-post \
	device-check android-check task-library-env convert-matrix bench report example \
	default-model-train bccd-train bccd-eval bccd-lite0-train bccd-lite0-eval bccd-int8 bccd-lite0-int8 convert-full \
	bccd-lite0-448-train bccd-lite0-448-eval bccd-lite0-448-int8 bccd-qat-seeds bccd-lite0-448-qat-seeds bench-d0-512 \
	bccd-lite0-448-flip-train bccd-lite0-448-flip-eval bccd-lite1-448-train bccd-lite1-448-eval bccd-label-audit \
	bccd-lite0-512-train bccd-lite0-512-eval bccd-lite0-512-int8 bccd-input-rounding \
	bccd-lite0-512-audited-train bccd-lite0-512-audited-eval bccd-lite0-576-train bccd-lite0-576-eval \
	bccd-lite0-512-augfix-train bccd-lite0-512-augfix-eval bccd-lite0-512-augfix-int8 bccd-lite0-512-int8-pixels \
	bccd-lite0-512-augfix-qat-seeds bccd-lite0-512-augfix-rounding-noise bccd-d0-rounding-noise bccd-device-check \
	bccd-d0-photometric-train bccd-d0-photometric-eval bccd-d0-photometric-int8 bccd-d0-photometric-qat-seeds \
	bccd-d0-noshift-int8

help:
	@echo "make setup                      create .venv with the pinned toolchain (requirements/lock.txt)"
	@echo "make test [JOBS=2]              run the whole test suite (what CI runs), JOBS modules at a time"
	@echo "make test-quick                 the tests not marked slow (minutes; for development)"
	@echo "make summary PHI=0 [VARIANT=d|lite] [NUM_CLASSES=90]"
	@echo "make train PHI=0 DATA=<dir|json> [VARIANT=d|lite] [EPOCHS=50] [BATCH=8] [OUT=runs/NAME] [INPUT_SIZE=]"
	@echo "     [INIT=checkpoint.pt]: fine-tune from a checkpoint (its class head is replaced if the classes differ);"
	@echo "     re-running the same command resumes OUT/last.pt"
	@echo "     VARIANT=lite PHI=0|1|2 starts from the ImageNet backbone (PRETRAINED=0: from scratch);"
	@echo "     [BACKBONE_WEIGHTS=file]: a backbone in timm layout (tf_efficientnet_b*, efficientnet_lite*)"
	@echo "     [VFLIP=0.5]: vertical flips too, for images without an up (microscopy, aerial); default off"
	@echo "     [PHOTOMETRIC=0.5]: other light and cameras on half the images (exposure, colour cast, noise, JPEG),"
	@echo "     for a model whose int8 files must hold the field (docs/QUANTIZATION.md); default off"
	@echo "     [EXCLUDE=list.txt]: leave the images a list names out (e.g. audit-labels' flagged.txt; also for eval)"
	@echo "make audit-labels CKPT=... DATA=... [AUDIT_SPLITS='train val test'] [AUDIT_OUT=runs/label-audit]"
	@echo "     the images whose labels the model disagrees with confidently -> audit.md, flagged.txt, drawn images"
	@echo "make import-effdet CKPT=effdet.pth [ARCH=tf_efficientdet_d0] [OUT=models/NAME.pt] [INPUT_SIZE=]"
	@echo "make split DATA=<dataset> [SPLIT_OUT=runs/split]   the train/val/test lists (automatic seeded split where"
	@echo "     the dataset has none: VOC without ImageSets, a single COCO json)"
	@echo "make eval CKPT=... DATA=... [SPLIT=test] [EVAL_OUT=runs/eval/<ckpt>-<split>.json] [CLASS_MAP=a=x,b=y] [EXCLUDE=]"
	@echo "make export TARGET=onnx|openvino|tflite|all PHI=0 PRECISION=fp32|fp16|int8|all [CKPT=] [OUT=exports/NAME]"
	@echo "     [INPUT_SIZE=N]: export at another multiple of 32 than the checkpoint's"
	@echo "     [IMAGES=dir]: gate on unlabelled images (models of classes no labelled dataset at hand has)"
	@echo "     int8: [QAT=1] [CALIB=folder] [CALIB_METHOD=onnx=percentile] [IO_DTYPE=int8|uint8] [FLOAT_LAYERS=K]"
	@echo "     [INT8_INPUT=pixels|normalised]: pixels in, the normalisation folded into the first convolution"
	@echo "     [SHIFTED=0.5]: calibrate on the default set with that share of photometrically shifted images"
	@echo "     [ACCEPT_UNMEASURABLE=1]: exit 0 although an int8 gate had too few FP32 detections to measure"
	@echo "make calib DATA=<dataset> CKPT=... [N=200] [SHIFTED=0.5] [OUT=calib_data/sets/NAME]   int8 calibration set"
	@echo "     (CKPT= may be left out only for the embedded synthetic dataset)"
	@echo "make edgetpu PHI=0 [CKPT=] [EDGETPU_MIN=0.95]   uint8 pixels-in TFLite, op check, edgetpu_compiler where installed"
	@echo "make convert-matrix [INPUT_SIZE=128] [PRECISION=fp32|fp16|all]  every variant through every exporter + gate"
	@echo "make bench [TARGETS=all] [THREADS=1,2] [QUICK=1] [CKPT=] [INPUT_SIZE=]   latency/size/accuracy of"
	@echo "     every target x precision vs PyTorch and onnxruntime FP32 -> bench/results.{json,md} + plots"
	@echo "make device-check [MODELS=a.tflite b.onnx] [IMAGES=...]   the runtime on emulated aarch64 (Pi OS base) vs x86"
	@echo "     [DEVICE_DATA=dataset SPLIT=test]: on a labelled split, with each side's mAP; [BOARD=pi5|pi4]: the CPU"
	@echo "make android-check [MODELS=x-android.tflite]  MediaPipe's and the Task Library's ObjectDetectors vs the"
	@echo "     runtime (docs/ANDROID.md); make task-library-env builds the Task Library's own environment"
	@echo "make report [DEVICE_RESULTS=pi5.json,coral.json] [REPORT=exports/NAME/report.json]  bench/report.html"
	@echo "make example                    the embedding example on a generated video (bench/demo-annotated.mp4)"
	@echo "make bench-post                 post-processing latency (results/postprocess-bench.md)"
	@echo "reference models and their committed results (make/reference-models.mk, notes in results/notes/):"
	@echo "make default-model-train        the default D0 on the embedded synthetic data (results/default-d0-eval.json)"
	@echo "make convert-full               D0 at 512 and Lite0 at 320 through every exporter + gate"
	@echo "make bccd-train / bccd-eval     the documented BCCD D0 run (results/bccd-d0-eval.json)"
	@echo "make bccd-lite0-train / bccd-lite0-eval / bccd-lite0-int8   BCCD Lite0 from the ImageNet backbone"
	@echo "     (results/bccd-lite0-eval.md, results/bccd-lite0-int8.md)"
	@echo "make bccd-lite0-448-train / -eval / -int8   the same Lite0 at 448 px (results/bccd-lite0-448-*.md)"
	@echo "make bccd-lite0-448-flip-train / -eval   the same with vertical flips too (results/bccd-lite0-448-flip-eval.md)"
	@echo "make bccd-lite1-448-train / -eval   the same recipe with EfficientDet-Lite1 (results/bccd-lite1-448-eval.md)"
	@echo "make bccd-lite0-512-train / -eval / -int8 [QAT=1]   the Lite0 recipe at 512 px, the best BCCD model"
	@echo "     (results/bccd-lite0-512-eval.md, results/bccd-lite0-512-int8.md)"
	@echo "make bccd-lite0-512-int8-pixels   the same post-training int8 with pixels in (results/bccd-lite0-512-int8-pixels.md)"
	@echo "make bccd-lite0-512-audited-train / -eval   the same without the images audit-labels flagged (training only)"
	@echo "make bccd-lite0-576-train / -eval   the same Lite0 recipe at 576 px (results/bccd-lite0-576-eval.md)"
	@echo "make bccd-lite0-512-augfix-train / -eval / -int8 [QAT=1]   the 512 recipe with each epoch's own"
	@echo "     augmentations (models/bccd-lite0-512-augfix.pt, results/bccd-lite0-512-augfix-{eval,int8}.md)"
	@echo "     bccd-lite0-512-augfix-qat-seeds [QAT_SEEDS='0 1 2']: its QAT once per seed"
	@echo "     (results/bccd-lite0-512-augfix-qat-seeds.md); bccd-lite0-512-augfix-rounding-noise: how far int8"
	@echo "     rounding alone moves its mAP, the QAT files among the draws (results/bccd-lite0-512-augfix-rounding-noise.md)"
	@echo "make bccd-label-audit           BCCD's labels audited by the Lite0 at 448 (results/bccd-label-audit/)"
	@echo "make bccd-input-rounding        the BCCD models against themselves under int8 input rounding"
	@echo "     (results/bccd-fp32-input-rounding.md: what their int8 detection match is read against)"
	@echo "make bccd-int8                  int8 PTQ + QAT on the BCCD D0, every target (results/bccd-d0-int8.md)"
	@echo "make bccd-qat-seeds [QAT_SEEDS='0 1 2']   the same QAT once per seed: mean and spread"
	@echo "     (results/bccd-d0-qat-seeds.md); bccd-lite0-448-qat-seeds: the Lite0 at 448 (results/bccd-lite0-448-qat-seeds.md)"
	@echo "     bccd-d0-rounding-noise: how far int8 rounding alone moves the D0's mAP (results/bccd-d0-rounding-noise.md)"
	@echo "make bccd-d0-photometric-train / -eval / -int8 / -qat-seeds   the BCCD D0 fine-tuned with half its images"
	@echo "     under other light (PHOTOMETRIC=0.5): its post-training int8 files hold the field"
	@echo "     (results/bccd-d0-photometric-*.md); bccd-d0-noshift-int8: the same epochs without the shift (they do not)"
	@echo "make bench-d0-512               make bench at 512 on the D0 trained at 512 (results/bench-d0-512/)"
	@echo "make bccd-device-check          bccd-int8's files on emulated Pi 5 and Pi 4 CPUs, mAP on both sides"
	@echo "     (results/device-check-aarch64-bccd-d0-pi5.md, -pi4.md)"

$(STAMP):
	@command -v $(PYTHON_SYS) >/dev/null || { echo "error: $(PYTHON_SYS) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/lock.txt
	rm -f $(VENV)/.installed $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

# Both run pytest through tests/suite.py: a process per module, JOBS modules at a time (default: the CPU
# cores, at most 2); if a native library kills pytest, it still prints which test died and by which signal.
# test-quick leaves out the tests marked slow (conversions, trainings, benchmarks).
test: $(STAMP)
	$(PY) -m tests.suite $(if $(JOBS),-j $(JOBS),) -q --durations=15

test-quick: $(STAMP)
	$(PY) -m tests.suite $(if $(JOBS),-j $(JOBS),) -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

summary: $(STAMP)
	@$(PY) -m efficientdet summary --phi $(PHI) --variant $(VARIANT) --num-classes $(NUM_CLASSES) $(size_flag)

data: $(STAMP)
	$(PY) -m efficientdet.data.synthetic data/synthetic

train: $(STAMP)
	$(PY) -m efficientdet train --data "$(DATA)" --phi $(PHI) --variant $(VARIANT) --epochs $(EPOCHS) \
		--batch-size $(BATCH) --out "$(OUT)" $(size_flag) $(if $(INIT),--init "$(INIT)",) \
		$(if $(filter 0,$(PRETRAINED)),--no-pretrained,) $(if $(BACKBONE_WEIGHTS),--backbone-weights "$(BACKBONE_WEIGHTS)",) \
		$(if $(VFLIP),--vflip $(VFLIP),) $(if $(PHOTOMETRIC),--photometric $(PHOTOMETRIC),) $(exclude_flag)

# Where a trained model and the labels disagree confidently (a class it finds that no box has, boxes it does not
# find): OUT/audit.{json,md}, OUT/flagged.txt (for EXCLUDE= after a look) and drawn images.
audit-labels: $(STAMP)
	@test -n "$(CKPT)" || { echo "error: CKPT=<checkpoint.pt> is required"; exit 2; }
	$(PY) -m efficientdet audit-labels --ckpt "$(CKPT)" --data "$(DATA)" --out "$(or $(AUDIT_OUT),runs/label-audit)" \
		$(if $(AUDIT_SPLITS),--split $(AUDIT_SPLITS),) $(class_map_flag)

# An effdet (rwightman/efficientdet-pytorch) checkpoint -> a checkpoint of this project.
import-effdet: $(STAMP)
	@test -n "$(CKPT)" || { echo "error: CKPT=<effdet checkpoint> is required"; exit 2; }
	$(PY) -m efficientdet import-effdet "$(CKPT)" $(if $(ARCH),--arch $(ARCH),) $(size_flag) \
		$(if $(filter command line environment,$(origin OUT)),--out "$(OUT)",)

int8_flags = $(if $(CALIB),--calib "$(CALIB)",) $(foreach m,$(CALIB_METHOD),--calib-method $(m)) \
	--io-dtype $(IO_DTYPE) --float-layers $(FLOAT_LAYERS) $(if $(INT8_INPUT),--int8-input $(INT8_INPUT),) \
	$(if $(filter 1,$(QAT)),--qat,)

export: $(STAMP)
	$(PY) -m convert --target $(TARGET) $(if $(PRECISION),--precision $(PRECISION),) --phi $(PHI) --variant $(VARIANT) \
		$(if $(CKPT),--ckpt "$(CKPT)",) --data "$(DATA)" --split $(EXPORT_SPLIT) --out "$(export_out)" $(int8_flags) \
		$(if $(IMAGES),--images "$(IMAGES)",) \
		$(size_flag) $(class_map_flag) $(if $(filter 1,$(ACCEPT_UNMEASURABLE)),--accept-unmeasurable,) \
		$(if $(filter 1,$(ANDROID)),--android,) $(if $(SHIFTED),--calib-shifted $(SHIFTED),)

# The train/val/test image lists the loaders use (a VOC folder without ImageSets or a single COCO json is
# split automatically, seeded): written to SPLIT_OUT, never into the dataset.
SPLIT_OUT ?= runs/split
split: $(STAMP)
	$(PY) -m efficientdet split --data "$(DATA)" --out "$(SPLIT_OUT)"

calib: $(STAMP)
	$(PY) -m calib_data --data "$(DATA)" --n $(N) $(if $(CKPT),--ckpt "$(CKPT)",) $(if $(SHIFTED),--shifted $(SHIFTED),) \
		$(if $(filter command line environment,$(origin OUT)),--out "$(OUT)",)

# Edge TPU: a uint8-I/O full-int8 TFLite, checked op by op here, compiled where edgetpu_compiler exists. It takes
# pixels (the camera's bytes, normalisation folded into the first convolution) unless INT8_INPUT says otherwise.
edgetpu_dir = $(if $(filter command line environment,$(origin OUT)),$(OUT),exports/$(VARIANT)$(PHI)-edgetpu)
edgetpu: $(STAMP)
	$(PY) -m convert --target tflite --precision int8 --io-dtype uint8 --phi $(PHI) --variant $(VARIANT) \
		$(if $(CKPT),--ckpt "$(CKPT)",) $(if $(CALIB),--calib "$(CALIB)",) --data "$(DATA)" --split $(EXPORT_SPLIT) \
		--int8-input $(or $(INT8_INPUT),pixels) --out "$(edgetpu_dir)"
	$(PY) -m convert.edgetpu check "$(edgetpu_dir)"/*-int8.tflite
	$(PY) -m convert.edgetpu compile "$(edgetpu_dir)"/*-int8.tflite --min-tpu-fraction $(EDGETPU_MIN)

eval: $(STAMP)
	@test -n "$(CKPT)" || { echo "error: CKPT=<checkpoint.pt> is required"; exit 2; }
	$(PY) -m efficientdet eval --ckpt "$(CKPT)" --data "$(DATA)" --split $(SPLIT) --out "$(eval_out)" $(class_map_flag) \
		$(exclude_flag)

clean:
	rm -rf runs exports .pytest_cache

# Without CKPT the benchmark takes the default D0 trained at the size it runs at (512: models/default-d0-512.pt;
# QUICK=1 at 256: models/default-d0.pt).
bench: $(STAMP)
	$(PY) -m benchmarks.bench $(if $(CKPT),--ckpt "$(CKPT)",) --targets $(TARGETS) --threads $(THREADS) --data "$(DATA)" \
		$(if $(filter 1,$(QUICK)),--quick,) $(size_flag) --out "$(BENCH_OUT)"

# The runtime on an emulated aarch64 Debian bookworm (Raspberry Pi OS's base) against this machine, per artifact:
# raw-output error and detections matched -> results/device-check-aarch64.{json,md}; DEVICE_DATA=<labelled dataset>
# [SPLIT=test]: on that split instead of IMAGES, with each side's mAP. Needs Debian's qemu-user-static and
# debootstrap; the emulated system is cached in .device/. BOARD=pi5 (Cortex-A76, the default) or pi4 (Cortex-A72):
# the CPU qemu emulates. Also prints the Coral steps.
DEVICE_DATA ?=
BOARD ?=
device-check: $(STAMP)
	$(PY) -m benchmarks.device_check $(if $(MODELS),--models $(MODELS),) $(if $(IMAGES),--images $(IMAGES),) \
		$(if $(DEVICE_DATA),--data "$(DEVICE_DATA)" --split $(SPLIT),) $(if $(BOARD),--board $(BOARD),)

# MediaPipe's and the TFLite Task Library's ObjectDetectors (the engines Android apps run) against the runtime
# on -android.tflite files (make export TARGET=tflite ANDROID=1) -> results/android-mediapipe.{json,md};
# docs/ANDROID.md.
android_models = $(or $(MODELS),$(wildcard exports/d0/*-android.tflite))
android-check: $(STAMP) $(TASK_STAMP)
	@[ -n "$(android_models)" ] || { echo "error: no -android.tflite in exports/d0: run make export TARGET=tflite \
	PRECISION=fp32,int8 ANDROID=1, or pass MODELS=" >&2; exit 2; }
	$(PY) -m benchmarks.android_engines $(android_models) --data "$(DATA)" \
		--task-library-python $(TASK_VENV)/bin/python

$(TASK_STAMP):
	@command -v $(PYTHON_SYS) >/dev/null || { echo "error: $(PYTHON_SYS) not found (Python 3.11 is required)"; exit 1; }
	test -x $(TASK_VENV)/bin/python || $(PYTHON_SYS) -m venv $(TASK_VENV)
	$(TASK_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements/task-library.txt
	rm -f $(TASK_VENV)/.installed-*
	touch $(TASK_STAMP)

task-library-env: $(TASK_STAMP)

report: $(STAMP)
	$(PY) -m benchmarks.html_report --bench $(BENCH_OUT)/results.json $(if $(REPORT),--report $(REPORT),) \
		--device-results "$(DEVICE_RESULTS)" --out "$(BENCH_OUT)"/report.html
	$(PY) -m benchmarks.check_html $(BENCH_OUT)/report.html --skip-without-browser

# The embedding example: runtime-only app on a generated video, with the README's main export.
EXAMPLE_MODEL ?=
example: $(STAMP)
	@model="$(EXAMPLE_MODEL)"; [ -n "$$model" ] || model=$$(ls exports/d0/*.tflite 2>/dev/null | head -1); \
	if [ -z "$$model" ]; then $(MAKE) export TARGET=tflite PHI=0 && model=$$(ls exports/d0/*.tflite | head -1); fi; \
	$(PY) -m examples.make_video $(BENCH_OUT)/demo.mp4 && \
	$(PY) -m examples.video_detect "$$model" $(BENCH_OUT)/demo.mp4 --out "$(BENCH_OUT)"/demo-annotated.mp4

bench-post: $(STAMP)
	$(PY) -m benchmarks.postprocess

convert-matrix: $(STAMP)
	$(PY) -m convert.matrix --size $(or $(INPUT_SIZE),128) --precision $(or $(PRECISION),fp32)

# The reference models and their committed results (dataset-specific; `make help` lists them).
include make/reference-models.mk
