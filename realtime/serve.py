"""`livesr serve`: a WebSocket server that upsamples many live streams with one batched model call per tick.

Protocol, one connection per stream:

    ws://HOST:PORT/v1/stream?model=speech&rate=16000[&format=f32le|s16le][&output_rate=48000][&new_band_db=DB]

(`new_band_db`: the listener's trim of the new band's level, as `--new-band-db`)
- the server's first message is text JSON: {"model", "rate", "output_rate", "format", "new_band_db",
  "latency_samples"} (latency at the output rate), or {"error": ...} and close code 1008 for a bad
  request (1013 when the server is full);
- the client sends binary frames of mono PCM at `rate`, any length; the server sends binary frames
  of PCM at `output_rate` as soon as they are ready;
- the client sends the text message {"event": "end"}; the server sends the rest (the latency
  flushed with silence) and closes with code 1000.

The output with its first `latency_samples` dropped equals file mode's output for the same input and
model. GET /metrics serves Prometheus text. The batching itself lives in `realtime.stream_hub`; this
module is the transport (the `serve` extra: websockets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qs, urlsplit

import numpy as np

from models.dsp.level import NEW_BAND_MAX_DB, check_new_band_db

from .stream_hub import RequestError, Stream, StreamHub

FORMATS = ("f32le", "s16le")
PATH = "/v1/stream"
SERVE_EXTRA = "pip install 'livesr[serve]'"
MAX_QUEUED_SECONDS = 4.0  # output a client leaves unread before its stream is dropped


class StreamRequest(NamedTuple):
    model: str
    rate: int
    format: str
    output_rate: int | None
    new_band_db: float  # the listener's trim of the new band's level (models/dsp/level.py)


def parse_request(path: str) -> StreamRequest:
    """What a request path's query asks for, or RequestError."""
    query = parse_qs(urlsplit(path).query)

    def one(name: str, default: str | None = None) -> str | None:
        values = query.get(name)
        if values is None:
            return default
        if len(values) != 1:
            raise RequestError(f"give {name} once, got {values}")
        return values[0]

    model = one("model")
    if not model:
        raise RequestError("the request needs ?model=NAME&rate=HZ")

    def integer(name: str, text: str | None) -> int | None:
        if text is None:
            return None
        try:
            return int(text)
        except ValueError:
            raise RequestError(f"{name} must be an integer in Hz, got {text!r}") from None

    rate = integer("rate", one("rate"))
    if rate is None:
        raise RequestError("the request needs rate=HZ (the input's sample rate)")
    fmt = one("format", "f32le") or "f32le"
    if fmt not in FORMATS:
        raise RequestError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    trim = one("new_band_db", "0") or "0"
    try:
        new_band_db = check_new_band_db(float(trim))
    except ValueError:
        raise RequestError(f"new_band_db must be dB within +-{NEW_BAND_MAX_DB:g}, got {trim!r}") from None
    return StreamRequest(model, rate, fmt, integer("output_rate", one("output_rate")), new_band_db)


def decode(frame: bytes, fmt: str) -> np.ndarray:
    """PCM bytes as float32 samples, or ValueError for a frame that is not whole samples."""
    width = 4 if fmt == "f32le" else 2
    if len(frame) % width:
        raise ValueError(f"a {fmt} frame must hold whole {width}-byte samples, got {len(frame)} bytes")
    if fmt == "f32le":
        return np.frombuffer(frame, "<f4").astype(np.float32)
    return np.frombuffer(frame, "<i2").astype(np.float32) / 32768.0


def encode(samples: np.ndarray, fmt: str) -> bytes:
    if fmt == "f32le":
        return samples.astype("<f4").tobytes()
    return np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768.0).astype("<i2").tobytes()


class Connection(Protocol):
    """One client's WebSocket, whatever serves it (websockets here, Starlette under Ray Serve)."""

    path: str  # the request's path and query

    async def send(self, message: str | bytes) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...

    def messages(self) -> AsyncIterator[str | bytes]:
        """The client's messages until it goes away."""
        ...


class WebsocketsConnection:
    """A `websockets` server connection as a `Connection`."""

    def __init__(self, ws: Any) -> None:
        self._ws, self.path = ws, ws.request.path

    async def send(self, message: str | bytes) -> None:
        await self._ws.send(message)

    async def close(self, code: int, reason: str = "") -> None:
        await self._ws.close(code, reason)

    async def messages(self) -> AsyncIterator[str | bytes]:
        async for message in self._ws:
            yield message


class StreamServer:
    """The hub, its tick loop and one handler per stream connection (asyncio; ticks run in a thread)."""

    def __init__(self, hub: StreamHub) -> None:
        self.hub = hub
        self._queues: dict[Stream, tuple[asyncio.Queue[bytes | None], str]] = {}
        self._work = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="livesr-tick")
        self._ticker: asyncio.Task | None = None

    def start(self) -> None:
        """Run the tick loop on the running event loop (once; later calls do nothing)."""
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self.ticker())

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()

    async def ticker(self) -> None:
        """Step every ready stream, deliver the output, repeat while there is work; then wait."""
        loop = asyncio.get_running_loop()
        while True:
            await self._work.wait()
            self._work.clear()
            while self.hub.has_work():
                for stream, row in await loop.run_in_executor(self._executor, self.hub.tick):
                    self._deliver(stream, row)

    def _deliver(self, stream: Stream, row: np.ndarray) -> None:
        entry = self._queues.get(stream)
        if entry is None:
            return
        queue, fmt = entry
        if row.size:
            queue.put_nowait(encode(row, fmt))
        if stream.finished:
            queue.put_nowait(None)
        elif queue.qsize() * stream.chunk > MAX_QUEUED_SECONDS * stream.key[1]:
            self.hub.close(stream)  # the client does not read: drop it rather than hold its output
            queue.put_nowait(None)

    def process_request(self, connection: Any, request: Any) -> Any:
        """Plain HTTP: /metrics, and 404 for any path that is not the stream endpoint."""
        path = urlsplit(request.path).path
        if path == "/metrics":
            response = connection.respond(HTTPStatus.OK, self.hub.prometheus())
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
            return response
        if path != PATH:
            return connection.respond(
                HTTPStatus.NOT_FOUND, f"livesr: streams at {PATH}, metrics at /metrics\n"
            )
        return None

    async def handle(self, ws: Connection) -> None:
        """Serve one stream connection to its end (the protocol of this module's docstring)."""
        self.start()
        try:
            model, rate, fmt, output_rate, new_band_db = parse_request(ws.path)
            stream = self.hub.open(model, rate, output_rate, new_band_db)
        except RequestError as err:
            await ws.send(json.dumps({"error": str(err)}))
            await ws.close(1013 if err.busy else 1008, str(err)[:120])
            return
        chain = stream.chain
        header = {
            "model": model,
            "rate": rate,
            "output_rate": chain.output_rate,
            "format": fmt,
            "new_band_db": chain.new_band_db,
            "latency_samples": chain.latency,
        }
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queues[stream] = (queue, fmt)
        writer = asyncio.create_task(self._write(ws, queue))
        try:
            await ws.send(json.dumps(header))
            if await self._read(ws, stream, fmt):
                await writer  # the rest of the output, then close 1000
        finally:
            self.hub.close(stream)
            self._queues.pop(stream, None)
            writer.cancel()

    async def _read(self, ws: Connection, stream: Stream, fmt: str) -> bool:
        """Feed the stream until the client's end event (True) or until it breaks the protocol or goes
        away (False: the stream is dropped)."""
        async for message in ws.messages():
            if isinstance(message, bytes):
                try:
                    samples = decode(message, fmt)
                except ValueError as err:
                    await ws.close(1007, str(err)[:120])
                    return False
                self.hub.feed(stream, samples)
                self._work.set()
                while not self.hub.wants_input(stream) and not stream.closed:
                    await asyncio.sleep(0.002)  # backpressure: stop reading until the hub catches up
                continue
            try:
                event = json.loads(message).get("event")
            except (ValueError, AttributeError):
                event = None
            if event != "end":
                await ws.close(1008, 'text messages must be {"event": "end"}')
                return False
            self.hub.end(stream)
            self._work.set()
            if stream.finished:
                self._queues[stream][0].put_nowait(None)
            return True
        return False

    @staticmethod
    async def _write(ws: Connection, queue: asyncio.Queue[bytes | None]) -> None:
        while (item := await queue.get()) is not None:
            await ws.send(item)
        await ws.close(1000)


async def serve_forever(host: str, port: int, hub: StreamHub, ready: asyncio.Future | None = None) -> None:
    """Serve until cancelled; `ready` gets the bound port once listening."""
    try:
        from websockets.asyncio.server import serve
    except ImportError:
        raise SystemExit(f"error: the stream server needs the websockets package: {SERVE_EXTRA}") from None
    server = StreamServer(hub)
    server.start()

    async def handle(ws: Any) -> None:
        await server.handle(WebsocketsConnection(ws))

    try:
        async with serve(handle, host, port, process_request=server.process_request, max_size=2**22) as ws:
            if ready is not None:
                ready.set_result(ws.sockets[0].getsockname()[1])
            await asyncio.Future()
    finally:
        server.stop()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livesr serve",
        description=__doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:3]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0: any free port)")
    p.add_argument(
        "--models", nargs="+", help="models clients may ask for (default: every preset that ships a graph)"
    )
    p.add_argument(
        "--max-streams", type=int, default=256, help="streams open at once (more are refused, 1013)"
    )
    p.add_argument(
        "--max-buffer-seconds",
        type=float,
        default=2.0,
        help="unprocessed input per stream before reading pauses",
    )
    p.add_argument("--max-batch", type=int, default=64, help="streams per model call")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model call")
    return p


def make_hub(models: Sequence[str] | None, threads: int = 1, **limits: Any) -> StreamHub:
    """A hub that runs the shipped presets' ONNX graphs (torch-free); `models` None: all of them."""
    from .generators import load_shipped, shipped_presets

    def load(name: str) -> Any:
        stepper = load_shipped(name, threads)
        if stepper is None:
            raise RequestError(f"model {name!r} has no shipped graph")
        return stepper

    return StreamHub(load, tuple(models) if models is not None else shipped_presets(), **limits)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    hub = make_hub(
        args.models,
        args.threads,
        max_streams=args.max_streams,
        max_buffer_seconds=args.max_buffer_seconds,
        max_batch=args.max_batch,
    )
    hub.preload()
    print(
        f"livesr serve: ws://{args.host}:{args.port}{PATH}?model=...&rate=...  metrics: /metrics", flush=True
    )
    try:
        asyncio.run(serve_forever(args.host, args.port, hub))
    except KeyboardInterrupt:
        pass
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    return 0
