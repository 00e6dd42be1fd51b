"""`livesr serve` as a Ray Serve application: the same stream server, N replicas, one cluster.

    serve run realtime.ray_app:build num_replicas=2 models=speech,music

Each replica is one `StreamServer` (its own `StreamHub`, batching the streams it holds) behind Ray
Serve's FastAPI ingress. Ray Serve keeps a WebSocket connection on the replica that accepted it for
its whole life, which is what a stream with state needs, and spreads new connections over the
replicas. Protocol and output are those of `livesr serve` (`realtime.serve`), at Ray Serve's HTTP
address (default port 8000): `ws://HOST:8000/v1/stream?model=speech&rate=16000`. `GET /metrics`
answers with the Prometheus text of whichever replica takes the request (Ray's own metrics cover
the cluster).

Builder arguments (`key=value` after the import path, all optional): num_replicas (1), models
(every preset that ships a graph), threads (onnxruntime threads per model call, 1), num_cpus (CPUs
Ray reserves per replica, 1), max_streams (per replica, 256), max_buffer_seconds (2), max_batch
(64). Needs the `ray` extra: `pip install 'livesr[ray]'`.
"""

# No `from __future__ import annotations`: FastAPI must see the handler's WebSocket annotation as a
# class, not a string, through Ray Serve's class-based view.
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

try:
    from fastapi import FastAPI, WebSocket
    from fastapi.responses import PlainTextResponse
    from ray import serve
    from starlette.websockets import WebSocketDisconnect
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(f"the Ray Serve app needs the ray extra: pip install 'livesr[ray]' ({err})") from None

from .serve import PATH, StreamServer, make_hub

app = FastAPI(title="livesr", description="real-time audio super-resolution streams")


class StarletteConnection:
    """A Starlette (FastAPI) WebSocket as a `realtime.serve.Connection`."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self.path = ws.url.path + (f"?{ws.url.query}" if ws.url.query else "")

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            await self._ws.send_bytes(message)
        else:
            await self._ws.send_text(message)

    async def close(self, code: int, reason: str = "") -> None:
        try:
            await self._ws.close(code, reason)
        except (RuntimeError, WebSocketDisconnect):
            pass  # the client is already gone

    async def messages(self) -> AsyncIterator[str | bytes]:
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                yield message["bytes"]
            elif message.get("text") is not None:
                yield message["text"]


@serve.deployment(ray_actor_options={"num_cpus": 1})
@serve.ingress(app)
class StreamReplica:
    """One replica: a stream server over the shipped ONNX graphs."""

    def __init__(self, models: Sequence[str] | None = None, threads: int = 1, **limits: Any) -> None:
        hub = make_hub(models, threads, **limits)
        hub.preload()
        self.server = StreamServer(hub)

    @app.websocket(PATH)
    async def stream(self, ws: WebSocket) -> None:
        await ws.accept()
        await self.server.handle(StarletteConnection(ws))

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(self) -> str:
        return self.server.hub.prometheus()


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    """Model names from "a,b" (command line) or a list (a YAML config)."""
    return tuple(value.split(",") if isinstance(value, str) else (str(v) for v in value))


def build(args: Mapping[str, Any]) -> Any:
    """The application `serve run realtime.ray_app:build key=value ...` deploys (see the module doc)."""
    known = {
        "num_replicas",
        "models",
        "threads",
        "num_cpus",
        "max_streams",
        "max_buffer_seconds",
        "max_batch",
    }
    unknown = set(args) - known
    if unknown:
        raise ValueError(
            f"unknown argument(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    max_streams = int(args.get("max_streams", 256))
    deployment = StreamReplica.options(
        num_replicas=int(args.get("num_replicas", 1)),
        max_ongoing_requests=max_streams,  # one request = one stream for its whole life
        ray_actor_options={"num_cpus": float(args.get("num_cpus", 1))},
    )
    return deployment.bind(
        models=_names(args["models"]) if "models" in args else None,
        threads=int(args.get("threads", 1)),
        max_streams=max_streams,
        max_buffer_seconds=float(args.get("max_buffer_seconds", 2.0)),
        max_batch=int(args.get("max_batch", 64)),
    )
