"""`xmppd`: run and administer the server.

Exit codes: 0 success, 1 the operation was refused (account exists, no such account, wrong
input) or the system refused (port in use), 2 usage or configuration error, 3 storage error
(unreachable, schema mismatch).
Passwords are read from a prompt or, with --password-stdin, from standard input; on the
command line only when --password is given explicitly.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from storage import AccountStore, SchemaError, Storage, StorageError
from xmppd.accounts import create_account, set_password
from xmppd.config import Config, ConfigError, load_config
from xmppd.jid import JID, InvalidJID, parse_jid

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_STORAGE = 0, 1, 2, 3


class CommandError(Exception):
    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        config = load_config(args.config or _default_config())
        _setup_logging(config.log_level if args.command == "serve" else "warning")
        return int(args.run(config, args))
    except ConfigError as error:
        print(f"xmppd: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as error:
        print(f"xmppd: {error}", file=sys.stderr)
        return error.code
    except (SchemaError, StorageError) as error:
        print(f"xmppd: storage error: {error}", file=sys.stderr)
        return EXIT_STORAGE
    except OSError as error:  # a port in use, an unreadable file
        print(f"xmppd: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


def _default_config() -> str | None:
    """--config, else $XMPPD_CONFIG, else the built-in defaults (host localhost, ./data)."""
    return os.environ.get("XMPPD_CONFIG") or None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmppd", description="An XMPP server for the clients people already use.")
    parser.add_argument("-c", "--config", help="TOML configuration file (default: $XMPPD_CONFIG or built-in defaults)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, run: Callable[[Config, argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.set_defaults(run=run)
        return sub

    command("serve", _serve, "run the server until SIGINT/SIGTERM")
    command("check-config", _check_config, "validate the configuration and exit")
    command("migrate", _migrate, "bring the database schema up to date")
    for name, run, help_ in (
        ("adduser", _adduser, "create an account"),
        ("passwd", _passwd, "set an account's password"),
    ):
        sub = command(name, run, help_)
        sub.add_argument("jid", help="the account, user@host")
        source = sub.add_mutually_exclusive_group()
        source.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        source.add_argument("--password", help="the password itself (visible to other local users: avoid)")
    deluser = command("deluser", _deluser, "delete an account and all its data")
    deluser.add_argument("jid", help="the account, user@host")
    users = command("users", _users, "list accounts")
    users.add_argument("host", nargs="?", help="only this host")
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# -- commands -------------------------------------------------------------------------------
def _serve(config: Config, _args: argparse.Namespace) -> int:
    from xmppd.server import Server

    asyncio.run(Server(config).serve_forever())
    return EXIT_OK


def _check_config(config: Config, _args: argparse.Namespace) -> int:
    print(f"{config.source}: OK ({len(config.hosts)} host(s), modules: {', '.join(config.all_modules)})")
    return EXIT_OK


def _migrate(config: Config, _args: argparse.Namespace) -> int:
    async def run(storage: Storage) -> int:
        applied = await storage.migrate()
        print(f"applied migrations {', '.join(map(str, applied))}" if applied else "schema is up to date")
        return EXIT_OK

    return _with_storage(config, run, check_schema=False)


def _adduser(config: Config, args: argparse.Namespace) -> int:
    return _store_password(config, args, create_account, done="created {}", refused="{} exists already")


def _passwd(config: Config, args: argparse.Namespace) -> int:
    return _store_password(config, args, set_password, done="password changed for {}", refused="{} does not exist")


def _store_password(
    config: Config,
    args: argparse.Namespace,
    operation: Callable[[AccountStore, JID, str, int], Awaitable[bool]],
    *,
    done: str,
    refused: str,
) -> int:
    account = _account(config, args.jid)
    password = _password(args)

    async def run(storage: Storage) -> int:
        if not await operation(storage.accounts, account, password, config.auth.scram_iterations):
            raise CommandError(refused.format(account))
        print(done.format(account))
        return EXIT_OK

    return _with_storage(config, run)


def _deluser(config: Config, args: argparse.Namespace) -> int:
    account = _account(config, args.jid)

    async def run(storage: Storage) -> int:
        assert account.local is not None
        if not await storage.accounts.delete(account.domain, account.local):
            raise CommandError(f"{account} does not exist")
        print(f"deleted {account}")
        return EXIT_OK

    return _with_storage(config, run)


def _users(config: Config, args: argparse.Namespace) -> int:
    if args.host is not None and args.host not in config.hosts:
        raise CommandError(f"{args.host} is not a host of this server ({', '.join(config.hosts)})", EXIT_USAGE)

    async def run(storage: Storage) -> int:
        for host, username in await storage.accounts.list(args.host):
            print(f"{username}@{host}")
        return EXIT_OK

    return _with_storage(config, run)


# -- helpers --------------------------------------------------------------------------------
def _account(config: Config, text: str) -> JID:
    try:
        jid = parse_jid(text)
    except InvalidJID as error:
        raise CommandError(f"{text!r} is not a valid JID: {error}", EXIT_USAGE) from None
    if jid.local is None or jid.resource is not None:
        raise CommandError(f"{text!r} is not an account address (user@host)", EXIT_USAGE)
    if jid.domain not in config.hosts:
        raise CommandError(f"{jid.domain} is not a host of this server ({', '.join(config.hosts)})", EXIT_USAGE)
    return jid


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        password = str(args.password)
    elif args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise CommandError("the passwords differ")
    else:
        raise CommandError("no terminal to ask for the password: use --password-stdin", EXIT_USAGE)
    if not password:
        raise CommandError("the password is empty")
    return password


def _with_storage(config: Config, run: Callable[[Storage], Awaitable[int]], *, check_schema: bool = True) -> int:
    from xmppd.server import open_configured_storage

    async def main() -> Any:
        storage = await open_configured_storage(config)
        try:
            if check_schema:
                from xmppd.server import prepare_schema

                await prepare_schema(storage, config.data_dir)
            return await run(storage)
        finally:
            await storage.close()

    try:
        return int(asyncio.run(main()))
    except ValueError as error:  # a password that PRECIS refuses
        raise CommandError(str(error)) from None


if __name__ == "__main__":
    sys.exit(main())
