"""Inference: a model file in, predictions out.

* onnx_session.py: onnxruntime sessions on the CPU or CUDA (no torch).
* backends.py: one `logits(uint8 batch)` interface over onnxruntime and PyTorch.
* pipeline.py: image files to prediction rows, streamed in input order.
* workers.py: decode and preprocessing in worker processes for large folders, rows in input order.
* tta.py: test-time augmentation over one-pixel shifts.

May import: model/, data/, utils/, the top-level modules; torch only inside the PyTorch backend.
"""
