"""The console's connections to the engine socket, on asyncio's own streams.

httpx's default async backend (anyio 4.16) waits for a readable unix socket with `add_reader(sock, f.set_result)`;
when the waiting task is cancelled in the same loop turn that data arrives (a screen switch or quitting while the
event stream is busy), the reader callback calls `set_result` on the cancelled future and the loop reports
InvalidStateError. asyncio's transports deliver bytes through `data_received` instead, so cancelling a read there
is always clean. tests/test_console_client.py runs that cancel-as-bytes-arrive sequence against this backend.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import typing

import httpcore
import httpx

CHUNK = 65536


class AsyncioUnixStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return await asyncio.wait_for(self._reader.read(max_bytes), timeout)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc) or "timed out reading from the engine") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            await asyncio.wait_for(self._writer.drain(), timeout)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc) or "timed out writing to the engine") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()  # no wait_closed(): a unix socket closes at once, and aclose may run while cancelled

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("TLS is not used on the engine's unix socket")

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":
            # httpcore asks this of an idle keep-alive connection: EOF seen means the engine closed it.
            return self._reader.at_eof() or self._writer.transport.is_closing()
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None


class AsyncioUnixBackend(httpcore.AsyncNetworkBackend):
    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable | None = None) -> httpcore.AsyncNetworkStream:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path, limit=CHUNK), timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"timed out connecting to {path}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"{path}: {exc.strerror or exc}") from exc
        for option in socket_options or ():
            sock: socket.socket = writer.get_extra_info("socket")
            sock.setsockopt(*option)
        return AsyncioUnixStream(reader, writer)

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the console reaches the engine over its unix socket only")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def unix_transport(path: str) -> httpx.AsyncHTTPTransport:
    """An httpx transport to the engine socket whose connections use AsyncioUnixBackend."""
    transport = httpx.AsyncHTTPTransport(uds=path)
    # httpx takes no network backend argument; its pool is the documented httpcore one, built the same way here.
    limits = httpx.Limits()  # httpx's defaults, as AsyncHTTPTransport would pass them
    transport._pool = httpcore.AsyncConnectionPool(
        uds=path, network_backend=AsyncioUnixBackend(), max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry)
    return transport
