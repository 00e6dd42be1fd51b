"""ONNX export of a generator's streaming step, and the onnxruntime streaming backend."""
