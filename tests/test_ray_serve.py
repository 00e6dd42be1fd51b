"""The stream server on Ray Serve: a local Ray instance, 2 replicas, concurrent streams equal file mode."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

pytest.importorskip("websockets")
ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
from _serve_client import assert_equals_file_mode, run_stream, signal  # noqa: E402

from realtime.ray_app import build  # noqa: E402

STREAMS = [("speech", 16000, 1.2, 333), ("speech", 8000, 0.9, 80), ("speech", 48000, 0.7, 1001)] * 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_port():
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build({"num_replicas": "2", "models": "speech", "num_cpus": "0.5"}), route_prefix="/")
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


def test_two_replicas_serve_streams_equal_to_file_mode(ray_port):
    deadline = time.monotonic() + 60
    while True:  # both replicas up before the streams start
        running = serve.status().applications["default"].deployments["StreamReplica"].replica_states
        if running.get("RUNNING", 0) == 2:
            break
        assert time.monotonic() < deadline, f"replicas not running: {running}"
        time.sleep(0.5)
    inputs = [signal(rate, seconds, i) for i, (_, rate, seconds, _) in enumerate(STREAMS)]

    async def scenario():
        return await asyncio.gather(
            *(
                run_stream(ray_port, f"model={m}&rate={r}", x, frame, pace=0.001)
                for (m, r, _, frame), x in zip(STREAMS, inputs)
            )
        )

    for (model, rate, _, _), x, (header, y, code) in zip(STREAMS, inputs, asyncio.run(scenario())):
        assert header["output_rate"] == 48000
        assert_equals_file_mode(model, rate, x, header, y, code)


def test_a_bad_request_is_refused_through_ray(ray_port):
    header, _, code = asyncio.run(run_stream(ray_port, "model=music&rate=11025", signal(11025, 0.1, 0), 100))
    assert "unknown model" in header["error"] and code == 1008


def test_unknown_builder_arguments_are_named():
    with pytest.raises(ValueError, match="replicas"):
        build({"replicas": "2"})
