"""`python -m realtime` on a real, paced audio device: a running JACK server (dummy backend in CI).

The `jack_server` fixture (conftest) uses a running server or starts
`jackd --no-realtime -d dummy -r 48000 -p 480` for the session.

The test process is a second JACK client: it plays a band-limited noise burst into the app's input
and records the app's output (all links to system:* are removed; the app's ports are found with
jack_lsp). The model is a tiny random Wave-U-Mamba saved as weights + config in a temporary folder:
cheap enough to run in real time even on a loaded 2-core machine with 40 ms host blocks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _realtime_models import save_tiny_generator

pytestmark = pytest.mark.jack

ROOT = Path(__file__).resolve().parents[1]


def _jack(*args: str) -> str:
    return subprocess.run(["jack_" + args[0], *args[1:]], capture_output=True, text=True, timeout=10).stdout


def _ports() -> set[str]:
    return set(_jack("lsp").split())


def _connections() -> list[tuple[str, str]]:
    """(port, connected port) pairs from `jack_lsp -c` (each link appears once from each end)."""
    pairs, current = [], None
    for line in _jack("lsp", "-c").splitlines():
        if line.startswith((" ", "\t")):
            pairs.append((current, line.strip()))
        else:
            current = line.strip()
    return pairs


def _wire(tester: str, app: str) -> None:
    """Only tester:out -> app:in and app:out -> tester:in; nothing to or from system:*."""
    for a, b in _connections():
        if a.split(":")[0] in (tester, app):
            subprocess.run(["jack_disconnect", a, b], capture_output=True, timeout=10)
    for src, dst in ((f"{tester}:out_0", f"{app}:in_0"), (f"{app}:out_0", f"{tester}:in_0")):
        subprocess.run(["jack_connect", src, dst], check=True, capture_output=True, timeout=10)


def _new_client(before: set[str], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = sorted(p for p in _ports() - before if p.endswith(("in_0", "out_0")))
        if new:
            return new[0].split(":")[0]
        time.sleep(0.05)
    raise AssertionError("no new JACK client appeared")


def _burst(rate: int, seconds: float) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    noise = np.random.default_rng(1).standard_normal(int(seconds * rate))
    return (0.3 * sosfilt(butter(8, 4000, fs=rate, output="sos"), noise)).astype(np.float32)


def _band_db(x: np.ndarray, rate: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return float(10 * np.log10(spec[(f >= lo) & (f < hi)].sum() + 1e-30))


def test_live_app_through_jack(tmp_path: Path, jack_server) -> None:
    import sounddevice as sd

    sd._terminate()  # re-enumerate: the server may have started after PortAudio was first initialised
    sd._initialize()
    jack = [d for d in sd.query_devices() if "JACK" in sd.query_hostapis(d["hostapi"])["name"]]
    if not jack:
        pytest.skip("PortAudio lists no JACK device (PortAudio built without JACK?)")
    device = jack[0]
    rate, period = int(device["default_samplerate"]), int(_jack("bufsize").split()[0])
    block = 4 * period  # 40 ms at -p 480: a tiny model's Python overhead stays far below the deadline

    burst = _burst(rate, 1.5)
    lead = int(0.3 * rate)
    played = np.zeros(lead + len(burst) + rate, np.float32)
    played[lead : lead + len(burst)] = burst
    recorded = np.zeros_like(played)
    pos, go, done = [0], threading.Event(), threading.Event()

    def callback(indata, outdata, frames, time_info, status):
        outdata.fill(0.0)
        if not go.is_set() or done.is_set():
            return
        p = pos[0]
        k = max(0, min(frames, len(played) - p))
        outdata[:k, 0] = played[p : p + k]
        recorded[p : p + k] = indata[:k, 0]
        pos[0] = p + frames
        if p + frames >= len(played):
            done.set()

    model = save_tiny_generator(tmp_path)
    summary_path = tmp_path / "summary.json"
    before = _ports()
    tester_stream = sd.Stream(
        samplerate=rate,
        blocksize=period,
        device=device["index"],
        channels=1,
        dtype="float32",
        callback=callback,
    )
    with tester_stream:
        tester = _new_client(before)
        before = _ports()
        cmd = [
            sys.executable, "-m", "realtime", "--device", str(device["index"]), "--duration", "6",
            "--model", str(model), "--backend", "torch", "--blocksize", str(block), "--model-block", str(block),
            "--summary-json", str(summary_path),
        ]  # fmt: skip
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        app = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            started = app.stderr.readline()  # "streaming ..." once its stream runs
            assert started.startswith("streaming"), started + app.stderr.read()
            _wire(tester, _new_client(before, timeout=5))
            go.set()
            assert done.wait(10), "the tester's stream stopped delivering callbacks"
            out, err = app.communicate(timeout=60)
        finally:
            if app.poll() is None:
                app.kill()
    assert app.returncode == 0, err
    summary = json.loads(summary_path.read_text())

    # Latency: where the burst comes back. The tester's own output reaches the app one JACK period
    # later (PortAudio's JACK buffering, measured as the 2-period round trip of a self-looped client,
    # of which the app's reported output latency already holds the graph's feedback period).
    corr = np.correlate(recorded, burst, "valid")
    chain = int(np.argmax(np.abs(corr))) - lead
    measured = chain - period
    reported = summary["reported_latency_ms"] * rate / 1e3
    print(f"\nreported {summary['reported_latency_ms']:.2f} ms, measured {1e3 * measured / rate:.2f} ms")
    print(out)
    assert abs(measured - reported) <= period, (measured, reported)
    assert abs(measured - reported) <= block  # the brief's bound: one host block

    # A high band the input did not have: the random generator's correction is broadband.
    got = recorded[lead + chain : lead + chain + len(burst)]
    assert _band_db(burst, rate, 8000, 20000) < _band_db(burst, rate, 0, 4000) - 60  # input: no high band
    assert _band_db(got, rate, 8000, 20000) > _band_db(burst, rate, 8000, 20000) + 20
    assert abs(_band_db(got, rate, 100, 3000) - _band_db(burst, rate, 100, 3000)) < 6  # low band kept

    assert summary["misses"] == 0, summary
    assert summary["blocks"] > 3 * rate // block
    assert summary["xruns"] <= 2, summary["xrun_flags"]  # at most the start-up flags
