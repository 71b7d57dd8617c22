"""What several integration tests need beside the server: a TLS context for its self-signed
certificate, node and npm for the JavaScript clients, a bounded subprocess run, and the `xmppd`
command line run as its own process."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import sys
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


async def run(
    *command: str, cwd: Path | None = None, within: float = 100, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run `command` for at most `within` seconds (no input): its exit code, output and errors."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT = 60  # a refused `xmppd serve` exits at once; one that serves would run forever


async def xmppd(config: Path, *args: str) -> tuple[int, str, str]:
    """Run `python -m xmppd --config CONFIG ARGS...` to its end: (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "XMPPD_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return await run(
        sys.executable, "-m", "xmppd", "--config", str(config), *args, cwd=config.parent, within=CLI_TIMEOUT, env=env
    )
