"""A call that waits in a busy server is not cancelled by grpc's own 30 s limit on calls no
handler has taken yet (`server.QUEUED_CALL_SECONDS`): it is served once the server frees
up. The server is a separate process built with the services' `server_options`, its event
loop blocked past grpc's limit by a first call while hundreds more arrive, as an overloaded
router's is under bench/soak.py's 1,000 streams. Without the option grpc ends all but one
of them with a bare CANCELLED ("CANCELLED"), which no handler sees and nothing logs."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from pathlib import Path

import grpc

from tests.harness import free_ports

QUEUED = 300
ROOT = Path(__file__).resolve().parents[2]
BLOCK_SECONDS = 34  # past grpc's 30 s for a call that waits unrequested

SERVER = textwrap.dedent(
    """
    import asyncio, sys, time
    import grpc
    from services.common.config import Config
    from services.common.server import server_options

    async def block(request, context):
        time.sleep({block})  # the event loop stops: no new call is taken meanwhile
        return b"blocked"

    async def echo(request, context):
        return b"served"

    async def main():
        server = grpc.aio.server(options=server_options(Config()))
        handlers = {{
            "Block": grpc.unary_unary_rpc_method_handler(block),
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
        }}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("t.Queue", handlers),)
        )
        server.add_insecure_port("127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())
    """
)


async def test_a_call_queued_behind_a_busy_loop_for_longer_than_grpcs_limit_is_served() -> None:
    (port,) = free_ports(1)
    code = SERVER.format(block=BLOCK_SECONDS, port=port)
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'gen' / 'python'}", "PATH": "/usr/bin:/bin"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        assert (await process.stdout.readline()).strip() == b"ready"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            blocking = channel.unary_unary("/t.Queue/Block")(b"", timeout=120)
            await asyncio.sleep(1)  # the first call holds the loop now
            queued_at = time.monotonic()
            echo = channel.unary_unary("/t.Queue/Echo")
            # More calls than the server has asked grpc for ahead: the rest wait in grpc's
            # queue, whose oldest call's wait grpc checks when another comes.
            first = [asyncio.ensure_future(echo(b"", timeout=120)) for _ in range(QUEUED)]
            await asyncio.sleep(BLOCK_SECONDS - 2)
            later = echo(b"", timeout=120)
            answers = await asyncio.gather(*first, later, return_exceptions=True)
            assert [a for a in answers if a != b"served"] == []
            # It really waited past grpc's 30 s (else this test proves nothing).
            assert time.monotonic() - queued_at > 30
            assert await blocking == b"blocked"
    finally:
        process.kill()
        await process.wait()
