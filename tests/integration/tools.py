"""What several integration tests need beside the server: a TLS context for its self-signed
certificate, node and npm for the JavaScript clients, and a bounded subprocess run."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

from tests.conftest import missing


def insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
    return context


def node_and_npm(purpose: str) -> tuple[str, str]:
    """The paths of node and npm; without them the test fails under CI=true, else is skipped."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing(f"node and npm are needed for {purpose}")
    return node, npm


async def run(*command: str, cwd: Path | None = None, within: float = 100) -> tuple[int, str, str]:
    """Run `command` for at most `within` seconds: its exit code, output and errors."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
