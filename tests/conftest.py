"""Test setup: Triton runs under its CPU interpreter when no GPU is present; `gpu` tests skip."""

import os

import pytest
import torch

# Read by Triton when kernels are decorated: must be set before any kernel module is imported.
_HAS_CUDA = torch.cuda.is_available()
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# One intra-op thread: the suite's tensors are small, and on a busy 2-core machine extra threads
# only contend (small tests ran tens of times slower with two).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if _HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def _jack_running() -> bool:
    import shutil
    import subprocess

    if shutil.which("jack_lsp") is None:
        return False
    return subprocess.run(["jack_lsp"], capture_output=True, timeout=10).returncode == 0


@pytest.fixture(scope="session")
def jack_server():
    """A running JACK server: the one already up, or a dummy-backend one started for the session.

    The dummy backend is a real, paced sound card (48 kHz, 480-frame periods) that needs no hardware, so the
    live tests drive a true duplex stream. Skips when jackd is not installed.
    """
    import shutil
    import subprocess
    import time

    if _jack_running():
        yield None
        return
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (apt-get install jackd2)")
    proc = subprocess.Popen(
        ["jackd", "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "480", "-C", "2", "-P", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not _jack_running():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip("jackd did not start")
        time.sleep(0.2)
    try:
        yield proc
    finally:
        # PortAudio must close its JACK client while the server is alive: terminating it later (at
        # interpreter exit) trips an assertion inside PortAudio's JACK host API and aborts the process.
        import sys

        sd = sys.modules.get("sounddevice")
        if sd is not None:
            sd._terminate()
        proc.terminate()
        proc.wait(timeout=10)
