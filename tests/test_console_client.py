"""The console's async connections to the engine socket (console/unix_backend.py), against real unix-socket
servers: cancelling a read as bytes arrive leaves the event loop clean, keep-alive connections are reused and
replaced when the server closes them, and a missing socket or a silent server gives httpx's own errors."""

from __future__ import annotations

import asyncio
import os
import tempfile

import httpx
import pytest

from console.unix_backend import AsyncioUnixBackend, unix_transport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def socket_path():
    folder = tempfile.mkdtemp(prefix="ex-cl-", dir="/tmp")
    yield os.path.join(folder, "s")
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    os.rmdir(folder)


def loop_errors() -> list[dict]:
    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    return errors


async def test_a_read_cancelled_as_bytes_arrive_leaves_the_loop_clean(socket_path):
    # The console cancels reads whenever a screen changes or it quits, while the event stream may be mid-event.
    # With anyio's raw unix socket stream this exact sequence makes the loop report InvalidStateError.
    errors = loop_errors()
    peers: list[asyncio.StreamWriter] = []

    async def accept(reader, writer):
        peers.append(writer)

    server = await asyncio.start_unix_server(accept, path=socket_path)
    stream = await AsyncioUnixBackend().connect_unix_socket(socket_path)
    for _ in range(20):
        await asyncio.sleep(0.01)
        if peers:
            break
    reading = asyncio.create_task(stream.read(100))
    await asyncio.sleep(0.01)  # the read is now waiting
    peers[0].write(b"event")
    asyncio.get_running_loop().call_soon(reading.cancel)  # cancelled in the turn the bytes arrive
    await asyncio.sleep(0.05)
    assert reading.cancelled()
    assert errors == []
    assert await stream.read(100, timeout=1) == b"event"  # nothing read was lost
    await stream.aclose()
    server.close()
    await server.wait_closed()


async def http_server(path: str, connections: list[int], respond: bool = True):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        connections.append(1)
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head or not respond:
                if not respond:
                    await asyncio.sleep(5)
                break
            target = head.split(b" ")[1]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
            if target == b"/close":
                break
        writer.close()

    return await asyncio.start_unix_server(serve, path=path)


async def test_keep_alive_connections_are_reused_and_replaced_when_the_server_closes_them(socket_path):
    errors = loop_errors()
    connections: list[int] = []
    server = await http_server(socket_path, connections)
    async with httpx.AsyncClient(transport=unix_transport(socket_path), base_url="http://expunge") as client:
        assert (await client.get("/a")).json() == {}
        assert (await client.get("/b")).json() == {}
        assert len(connections) == 1  # one connection carried both
        assert (await client.get("/close")).status_code == 200
        await asyncio.sleep(0.05)  # the server's close reaches the idle connection
        assert (await client.get("/c")).json() == {}  # a fresh connection, not a failed request
        assert len(connections) == 2
    server.close()
    await server.wait_closed()
    assert errors == []


async def test_a_missing_socket_and_a_silent_server_give_httpx_errors(socket_path):
    async with httpx.AsyncClient(transport=unix_transport(socket_path), base_url="http://expunge") as client:
        with pytest.raises(httpx.ConnectError, match="No such file"):
            await client.get("/a")
    server = await http_server(socket_path, [], respond=False)
    async with httpx.AsyncClient(transport=unix_transport(socket_path), base_url="http://expunge",
                                 timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/a")
    server.close()
    await server.wait_closed()


async def test_the_console_client_reports_an_unreachable_engine(tmp_path):
    from console.client import AsyncEngineClient, EngineError
    from store.paths import Paths

    client = AsyncEngineClient(Paths(config=tmp_path / "c", data=tmp_path / "d", state=tmp_path / "s"))
    with pytest.raises(EngineError, match="not reachable"):
        await client.health()
    await client.aclose()
