"""`livesr serve`: many streams through one batched server equal file mode, and cannot disturb each other."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

pytest.importorskip("websockets")
from _serve_client import assert_equals_file_mode, run_stream, signal  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from realtime.serve import decode, encode, make_hub, parse_request, serve_forever  # noqa: E402
from realtime.stream_hub import RequestError  # noqa: E402


async def with_server(scenario: Callable[[int], Awaitable[object]], **limits) -> tuple[object, object]:
    hub = make_hub(None, **limits)  # every shipped preset
    hub.preload()
    ready = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve_forever("127.0.0.1", 0, hub, ready))
    try:
        return await scenario(await ready), hub
    finally:
        server.cancel()


STREAMS = [  # model, rate, seconds, frame samples (any length, not a multiple of anything), more query
    ("speech", 16000, 1.3, 333, ""),
    ("speech", 8000, 0.9, 77, "&new_band_db=4.5"),  # batched with the other 8 kHz stream: same trim
    ("speech", 48000, 0.6, 1001, ""),
    ("mambawave", 16000, 0.4, 160, ""),
    ("music", 11025, 1.1, 512, "&new_band_db=-5"),
    ("speech", 8000, 1.6, 80, "&new_band_db=4.5"),
    ("music", 22050, 0.5, 999, ""),
    ("mambawave", 24000, 1.0, 480, ""),
]


def test_eight_concurrent_streams_each_equal_file_mode():
    inputs = [signal(rate, seconds, i) for i, (_, rate, seconds, _, _) in enumerate(STREAMS)]

    async def scenario(port: int):
        return await asyncio.gather(
            *(
                run_stream(port, f"model={m}&rate={r}{more}", x, frame, pace=0.001)
                for (m, r, _, frame, more), x in zip(STREAMS, inputs)
            )
        )

    results, hub = asyncio.run(with_server(scenario))
    assert [header["new_band_db"] for header, _, _ in results] == [0, 4.5, 0, 0, -5, 4.5, 0, 0]
    for (model, rate, _, _, _), x, (header, y, code) in zip(STREAMS, inputs, results):
        assert header["output_rate"] == (44100 if model == "music" else 48000)
        assert_equals_file_mode(model, rate, x, header, y, code)
    assert max(i for i, c in enumerate(hub.metrics.batch_counts) if c) > 0  # some model calls batched streams


def test_a_bad_stream_leaves_the_others_unchanged():
    good = [("speech", 16000, signal(16000, 1.0, 1)), ("speech", 8000, signal(8000, 1.2, 2))]
    nan = signal(16000, 0.8, 3)
    nan[100:400] = np.nan
    nan[500] = np.inf

    async def scenario(port: int):
        others = [
            run_stream(port, "model=speech&rate=16000", nan, 160),  # NaN / Inf samples
            run_stream(port, "model=speech&rate=16000", signal(16000, 1.0, 4), 160, stall=0.5),  # stalls
            run_stream(port, "model=speech&rate=16000", signal(16000, 1.0, 5), 160, disconnect_after=20),
            run_stream(port, "model=nope&rate=16000", signal(16000, 0.1, 6), 160),  # malformed request
            run_stream(port, "model=speech&rate=12345", signal(16000, 0.1, 6), 160),
        ]
        results = await asyncio.gather(
            *(run_stream(port, f"model={m}&rate={r}", x, 200, pace=0.001) for m, r, x in good), *others
        )
        return results

    results, hub = asyncio.run(with_server(scenario))
    for (model, rate, x), (header, y, code) in zip(good, results[:2]):
        assert_equals_file_mode(model, rate, x, header, y, code)
    nan_header, nan_out, nan_code = results[2]
    assert nan_code == 1000 and np.isfinite(nan_out).all() and hub.metrics.nonfinite_samples == 301
    clean = nan.copy()
    clean[~np.isfinite(clean)] = 0  # what file mode does with them
    assert_equals_file_mode("speech", 16000, clean, nan_header, nan_out, nan_code)
    assert_equals_file_mode("speech", 16000, signal(16000, 1.0, 4), *results[3])  # the staller, too
    assert results[5][0]["error"].startswith("unknown model") and results[5][2] == 1008
    assert "not supported" in results[6][0]["error"] and results[6][2] == 1008
    assert hub.streams == []  # every slot was freed, the disconnected one included


def test_requests_frames_and_http_endpoints():
    with pytest.raises(RequestError, match="format"):
        parse_request("/v1/stream?model=speech&rate=16000&format=mp3")
    with pytest.raises(RequestError, match="rate"):
        parse_request("/v1/stream?model=speech")
    with pytest.raises(RequestError, match="integer"):
        parse_request("/v1/stream?model=speech&rate=fast")
    with pytest.raises(RequestError, match="new_band_db"):
        parse_request("/v1/stream?model=speech&rate=16000&new_band_db=40")
    with pytest.raises(RequestError, match="new_band_db"):
        parse_request("/v1/stream?model=speech&rate=16000&new_band_db=loud")
    assert parse_request("/v1/stream?model=music&rate=11025&format=s16le&output_rate=48000") == (
        "music",
        11025,
        "s16le",
        48000,
        0.0,
    )
    assert parse_request("/v1/stream?model=speech&rate=8000&new_band_db=-4.5").new_band_db == -4.5
    with pytest.raises(ValueError, match="whole 4-byte"):
        decode(b"\x00" * 6, "f32le")
    x = np.array([0.0, 0.5, -1.0, 0.999], np.float32)
    assert np.abs(decode(encode(x, "s16le"), "s16le") - x).max() < 1e-4

    async def scenario(port: int):
        async with connect(f"ws://127.0.0.1:{port}/v1/stream?model=speech&rate=16000") as ws:
            json.loads(await ws.recv())
            await ws.send(b"\x00\x01\x02")  # not whole float32 samples
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            odd = ws.close_code
        async with connect(f"ws://127.0.0.1:{port}/v1/stream?model=speech&rate=16000") as ws:
            json.loads(await ws.recv())
            async with connect(f"ws://127.0.0.1:{port}/v1/stream?model=speech&rate=16000") as ws2:
                busy = json.loads(await ws2.recv())
                with pytest.raises(ConnectionClosed):
                    await ws2.recv()
                busy_code = ws2.close_code
        loop = asyncio.get_running_loop()
        metrics = await loop.run_in_executor(
            None, lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        )
        return odd, busy, busy_code, metrics

    (odd, busy, busy_code, metrics), _ = asyncio.run(with_server(scenario, max_streams=1))
    assert odd == 1007
    assert "maximum of 1 streams" in busy["error"] and busy_code == 1013
    assert "livesr_streams_rejected_total 1" in metrics and "livesr_step_seconds_bucket" in metrics


def test_a_streams_trim_sets_its_band_level_and_its_batch_group():
    hub = make_hub(("speech",))
    plain, trimmed = hub.open("speech", 16000), hub.open("speech", 16000, new_band_db=-6.0)
    assert plain.key != trimmed.key and trimmed.chain.new_band_db == -6.0
    np.testing.assert_allclose(
        trimmed.chain.level_values["level.rule"], plain.chain.level_values["level.rule"] * 10**-0.6, rtol=1e-6
    )
    with pytest.raises(RequestError, match="below speech's rate"):
        hub.open("speech", 48000, new_band_db=3.0)


def test_the_hub_stops_taking_input_past_its_buffer_limit():
    hub = make_hub(("speech",), max_buffer_seconds=0.1)
    stream = hub.open("speech", 16000)
    hub.feed(stream, np.zeros(1000, np.float32))
    assert hub.wants_input(stream)
    hub.feed(stream, np.zeros(1000, np.float32))
    assert not hub.wants_input(stream)
    while hub.has_work():
        hub.tick()
    assert hub.wants_input(stream) and stream.buffered < stream.chunk
