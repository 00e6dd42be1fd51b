"""Backend choice: how a generator runs on the host (torch on CPU, Triton on CUDA, or onnxruntime).

Torch is imported only when a torch model is run, so the ONNX path stays torch-free.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from typing import Any

from models.dsp.chain import Stepper

BACKENDS = ("auto", "torch", "onnx", "triton")


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")  # a torch module can only exist once torch is imported
    return torch is not None and isinstance(model, torch.nn.Module)


def make_stepper(model: Any, backend: str = "auto") -> tuple[Stepper, str]:
    """Choose how the generator runs; returns (stepper, resolved backend name).

    - a model that is not a torch module is taken as a ready numpy stepper (e.g. an OnnxStreamer);
    - "torch": the torch model on CPU; "triton": on CUDA (the kernels then use the Triton scan);
    - "onnx": exported with `export.onnx.cached_export(model)` and run by `export.runtime.OnnxStreamer`;
    - "auto": "onnx" when onnxruntime is installed and the export works, else "torch".
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not _is_torch_module(model):
        if backend not in ("auto", "onnx"):
            raise ValueError(f"backend={backend!r} needs a torch model, got a {type(model).__name__}")
        return model, "onnx"
    from models.stepper import TorchStepper

    if backend == "triton":
        import torch

        if not torch.cuda.is_available() or importlib.util.find_spec("triton") is None:
            raise ValueError("backend='triton' needs a CUDA device and the triton package")
        return TorchStepper(model, "cuda"), "triton"
    if backend == "onnx" or (backend == "auto" and importlib.util.find_spec("onnxruntime") is not None):
        try:
            from export.onnx import cached_export
            from export.runtime import OnnxStreamer

            return OnnxStreamer(cached_export(model)), "onnx"
        except Exception as exc:
            if backend == "onnx":
                raise
            warnings.warn(f"ONNX backend unavailable ({exc!r}); running the torch model", stacklevel=2)
    return TorchStepper(model, "cpu"), "torch"
