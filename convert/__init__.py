"""Exporters (ONNX, OpenVINO IR, TFLite; FP32/FP16) and the parity gate that decides whether an artifact ships."""
