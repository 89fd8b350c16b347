"""Export: a safetensors model to an ONNX file that verifies itself.

* graph.py: the traced ONNX graph, batch norm folded, metadata.
* verify.py: the ONNX model's probabilities against PyTorch's.
* int8.py: static int8 quantisation, accepted only within an accuracy budget.
* exporter.py: `export_onnx` and `export_in_memory`, which put the above together.

May import: inference/ (sessions), model/, utils/, the top-level modules, torch, onnx, onnxruntime.
"""
