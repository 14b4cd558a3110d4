"""int8 for every target: post-training calibration with each target's own tool, per-layer sensitivity,
quantization-aware fine-tuning. All of it is fed by one :mod:`calib_data` set, so the targets are
calibrated on identical, runtime-pre-processed inputs.
"""
