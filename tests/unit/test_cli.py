"""`python -m xmppd`: the admin commands, run as a real subprocess against SQLite in tmp_path.

Exit codes: 0 success, 1 refused (exists, no such account, bad password), 2 usage or configuration.
The password is given on standard input and must never show up in any output or in the database.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage import open_storage
from storage.model import SCRAM_HASHES, ScramCredentials
from xmppd.sasl import verify_plain

REPO = Path(__file__).resolve().parents[2]
OLD_PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "Tr0ub4dor&3 ünïcode"
SUBCOMMANDS = ["serve", "check-config", "migrate", "adduser", "passwd", "deluser", "users"]


class Xmppd:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.config = tmp_path / "xmppd.toml"
        self.config.write_text(
            "[server]\n"
            'hosts = ["example.org", "example.net"]\n'
            f'data_dir = "{self.data_dir}"\n'
            "[storage]\n"
            'backend = "sqlite"\n'
        )
        self.outputs: list[str] = []

    @property
    def database(self) -> Path:
        return self.data_dir / "xmppd.sqlite3"

    def __call__(
        self, *args: str, password: str | None = None, stdin: int | None = None, config: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "XMPPD_CONFIG"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        result = subprocess.run(
            [sys.executable, "-m", "xmppd", "--config", str(config or self.config), *args],
            input=None if password is None else password + "\n",
            stdin=stdin,
            capture_output=True,
            text=True,
            cwd=self.tmp_path,
            env=env,
            timeout=60,
            check=False,
        )
        self.outputs += [result.stdout, result.stderr]
        return result

    def credentials(self, domain: str, username: str, hash_name: str) -> ScramCredentials | None:
        async def read() -> ScramCredentials | None:
            storage = await open_storage("sqlite", sqlite_path=str(self.database))
            try:
                return await storage.accounts.credentials(domain, username, hash_name)
            finally:
                await storage.close()

        return asyncio.run(read())

    def stored_bytes(self) -> bytes:
        """Everything the server wrote: the database, its WAL and anything else in data_dir."""
        return b"".join(path.read_bytes() for path in sorted(self.data_dir.rglob("*")) if path.is_file())


@pytest.fixture
def xmppd(tmp_path: Path) -> Xmppd:
    return Xmppd(tmp_path)


def assert_password_never_shown(xmppd: Xmppd, *passwords: str) -> None:
    stored = xmppd.stored_bytes()
    for password in passwords:
        for output in xmppd.outputs:
            assert password not in output
        for encoded in (password.encode(), password.encode("utf-16-le")):
            assert encoded not in stored


def test_account_lifecycle(xmppd: Xmppd) -> None:
    migrate = xmppd("migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert migrate.stdout.startswith("applied migrations 1")
    again = xmppd("migrate")
    assert (again.returncode, again.stdout.strip()) == (0, "schema is up to date")

    added = xmppd("adduser", "juliet@example.org", "--password-stdin", password=OLD_PASSWORD)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "created juliet@example.org"
    duplicate = xmppd("adduser", "Juliet@Example.org", "--password-stdin", password="whatever")
    assert duplicate.returncode == 1
    assert "juliet@example.org exists already" in duplicate.stderr
    assert xmppd("adduser", "romeo@example.net", "--password-stdin", password=OLD_PASSWORD).returncode == 0

    users = xmppd("users")
    assert users.returncode == 0
    assert sorted(users.stdout.split()) == ["juliet@example.org", "romeo@example.net"]
    only = xmppd("users", "example.org")
    assert (only.returncode, only.stdout.split()) == (0, ["juliet@example.org"])

    for hash_name in SCRAM_HASHES:
        stored = xmppd.credentials("example.org", "juliet", hash_name)
        assert stored is not None and stored.iterations == 4096
        assert verify_plain(OLD_PASSWORD, stored)

    changed = xmppd("passwd", "juliet@example.org", "--password-stdin", password=NEW_PASSWORD)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == "password changed for juliet@example.org"
    for hash_name in SCRAM_HASHES:
        stored = xmppd.credentials("example.org", "juliet", hash_name)
        assert stored is not None
        assert verify_plain(NEW_PASSWORD, stored)
        assert not verify_plain(OLD_PASSWORD, stored)
    romeo = xmppd.credentials("example.net", "romeo", "sha256")
    assert romeo is not None and verify_plain(OLD_PASSWORD, romeo)  # untouched

    missing = xmppd("passwd", "nobody@example.org", "--password-stdin", password=NEW_PASSWORD)
    assert missing.returncode == 1 and "nobody@example.org does not exist" in missing.stderr

    deleted = xmppd("deluser", "juliet@example.org")
    assert (deleted.returncode, deleted.stdout.strip()) == (0, "deleted juliet@example.org")
    assert xmppd.credentials("example.org", "juliet", "sha256") is None
    assert xmppd("users").stdout.split() == ["romeo@example.net"]
    gone = xmppd("deluser", "juliet@example.org")
    assert gone.returncode == 1 and "juliet@example.org does not exist" in gone.stderr

    assert_password_never_shown(xmppd, OLD_PASSWORD, NEW_PASSWORD)


@pytest.mark.parametrize(
    ("jid", "message"),
    [
        ("juliet@", "is not a valid JID"),
        ("ju liet@example.org", "is not a valid JID"),
        ("example.org", "is not an account address"),
        ("juliet@example.org/balcony", "is not an account address"),
    ],
)
def test_invalid_jid_is_a_usage_error(xmppd: Xmppd, jid: str, message: str) -> None:
    result = xmppd("adduser", jid, "--password-stdin", password=OLD_PASSWORD)
    assert result.returncode == 2
    assert message in result.stderr
    assert not xmppd.database.exists()  # refused before touching storage
    assert_password_never_shown(xmppd, OLD_PASSWORD)


def test_host_not_served_is_a_usage_error(xmppd: Xmppd) -> None:
    result = xmppd("adduser", "juliet@elsewhere.example", "--password-stdin", password=OLD_PASSWORD)
    assert result.returncode == 2
    assert "elsewhere.example is not a host of this server (example.org, example.net)" in result.stderr
    assert xmppd("deluser", "juliet@elsewhere.example").returncode == 2
    assert xmppd("users", "elsewhere.example").returncode == 2


def test_no_terminal_and_no_password_stdin_is_a_usage_error(xmppd: Xmppd) -> None:
    result = xmppd("adduser", "juliet@example.org", stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "use --password-stdin" in result.stderr
    assert xmppd("passwd", "juliet@example.org", stdin=subprocess.DEVNULL).returncode == 2


def test_empty_password_is_refused(xmppd: Xmppd) -> None:
    result = xmppd("adduser", "juliet@example.org", "--password-stdin", password="")
    assert result.returncode == 1 and "the password is empty" in result.stderr


def test_password_refused_by_precis_is_not_echoed(xmppd: Xmppd) -> None:
    bad = "bell\x07secret"
    result = xmppd("adduser", "juliet@example.org", "--password-stdin", password=bad)
    assert result.returncode == 1
    assert "OpaqueString" in result.stderr
    assert xmppd("users").stdout == ""
    assert_password_never_shown(xmppd, bad, "secret")


def test_check_config(xmppd: Xmppd) -> None:
    good = xmppd("check-config")
    assert good.returncode == 0
    assert good.stdout.startswith(f"{xmppd.config}: OK (2 host(s)")
    broken = xmppd.tmp_path / "broken.toml"
    broken.write_text("[c2s]\nport = 70000\n")
    result = xmppd("check-config", config=broken)
    assert result.returncode == 2
    assert "configuration error" in result.stderr
    assert f"{broken}: c2s.port = 70000 is not valid: a whole number from 1 to 65535" in result.stderr
    unknown = xmppd.tmp_path / "unknown.toml"
    unknown.write_text("[server]\nhostz = []\n")
    result = xmppd("check-config", config=unknown)
    assert result.returncode == 2 and "server.hostz" in result.stderr


def test_broken_config_stops_every_command(xmppd: Xmppd) -> None:
    broken = xmppd.tmp_path / "broken.toml"
    broken.write_text("[server\n")
    result = xmppd("adduser", "juliet@example.org", "--password-stdin", password=OLD_PASSWORD, config=broken)
    assert result.returncode == 2 and str(broken) in result.stderr


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help(xmppd: Xmppd, command: str | None) -> None:
    result = xmppd(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: xmppd")
    if command:
        assert command in result.stdout.splitlines()[0]


def test_no_command_prints_help_and_is_a_usage_error(xmppd: Xmppd) -> None:
    result = xmppd()
    assert result.returncode == 2
    assert "usage: xmppd" in result.stdout and "adduser" in result.stdout
