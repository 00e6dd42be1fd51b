"""A stream client for the server tests: send a signal in frames, collect the reply, compare it with
file mode."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime.generators import load_generator
from realtime.processor import Processor
from realtime.serve import decode, encode


def file_mode(model: str, rate: int, x: np.ndarray, new_band_db: float = 0.0) -> np.ndarray:
    return Processor(load_generator(model), rate, new_band_db=new_band_db).process_file_array(x)


def signal(rate: int, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t)
    return (tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


async def run_stream(
    port: int,
    query: str,
    x: np.ndarray,
    frame: int,
    *,
    stall: float = 0.0,
    disconnect_after: int | None = None,
    pace: float = 0.0,
) -> tuple[dict, np.ndarray, int | None]:
    """Send `x` in frames of `frame` samples and collect the reply: (header, output, close code)."""
    async with connect(f"ws://127.0.0.1:{port}/v1/stream?{query}") as ws:
        header = json.loads(await ws.recv())
        if "error" in header:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return header, np.zeros(0, np.float32), ws.close_code

        async def send() -> None:
            for k, i in enumerate(range(0, x.size, frame)):
                if disconnect_after is not None and k == disconnect_after:
                    await ws.close()
                    return
                await ws.send(encode(x[i : i + frame], "f32le"))
                if k == 3 and stall:
                    await asyncio.sleep(stall)
                await asyncio.sleep(pace)
            await ws.send(json.dumps({"event": "end"}))

        sender = asyncio.create_task(send())
        parts = []
        try:
            async for message in ws:
                parts.append(decode(message, "f32le"))
        except ConnectionClosed:
            pass
        await sender
        out = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return header, out, ws.close_code


def assert_equals_file_mode(model: str, rate: int, x: np.ndarray, header: dict, y: np.ndarray, code) -> None:
    assert code == 1000
    ref = file_mode(model, rate, x, header["new_band_db"])
    latency = header["latency_samples"]
    assert y.size == latency + ref.size
    np.testing.assert_allclose(y[latency:], ref, atol=1e-4, rtol=0)
