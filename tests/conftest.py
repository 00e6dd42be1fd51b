"""Test setup: Triton runs under its CPU interpreter when no GPU is present; `gpu` tests skip."""

import os

# Read by Triton when kernels are decorated: must be set before any kernel module is imported.
try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # the torch-free ONNX runtime test runs in a subprocess, not here
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if _HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
