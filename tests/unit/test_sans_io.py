"""The sans-IO core never imports asyncio, socket or ssl, directly or through other modules.

Checked by reading imports with `ast`, following imports of our own packages transitively:
- an `xmppd` module that is reached counts with every import it has, also those inside
  functions (they run when the function is called);
- a module of another local package (`storage.model`, and with it the `storage` package's
  `__init__`) counts with what runs on import: module level and class bodies, not functions;
- imports under `if TYPE_CHECKING:` never run and do not count.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCAL_PACKAGES = ("xmppd", "storage", "components")
SANS_IO = [
    "xmppd.xml",
    "xmppd.jid",
    "xmppd.sasl",
    "xmppd.negotiation",
    "xmppd.framing",
    "xmppd.events",
    "xmppd.errors",
    "xmppd.hooks",
    "xmppd.stanza",
]
FORBIDDEN = ("asyncio", "socket", "ssl")


def module_file(name: str) -> Path | None:
    """The source of a module of ours, or None for the standard library and third parties."""
    if name.split(".", maxsplit=1)[0] not in LOCAL_PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(source: str, name: str, *, is_package: bool, in_functions: bool) -> set[str]:
    """Absolute names of the modules that `source` (module `name`) imports when it runs."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and not in_functions:
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # `from pkg import sub` imports the submodule pkg.sub.
            found.update(f"{module}.{a.name}" for a in node.names if module_file(f"{module}.{a.name}"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    # Importing a.b.c runs a/__init__ and a/b/__init__ first.
    return {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}


def import_chains(start: str) -> dict[str, list[str]]:
    """Every module reached from `start`, with the chain of imports that reaches it."""
    chains = {start: [start]}
    queue = [start]
    while queue:
        current = queue.pop(0)
        path = module_file(current)
        if path is None:
            continue
        strict = current.split(".")[0] == "xmppd"
        imported = runtime_imports(
            path.read_text(encoding="utf-8"),
            current,
            is_package=path.name == "__init__.py",
            in_functions=strict,
        )
        for name in sorted(imported):
            if name not in chains:
                chains[name] = [*chains[current], name]
                queue.append(name)
    return chains


def forbidden_chains(start: str) -> list[str]:
    return [
        " -> ".join(chain)
        for name, chain in import_chains(start).items()
        if name.split(".")[0] in FORBIDDEN
    ]


@pytest.mark.parametrize("module", SANS_IO)
def test_sans_io_module_never_imports_io(module: str) -> None:
    assert module_file(module) is not None
    assert forbidden_chains(module) == []


def test_sans_io_closure_is_followed_through_our_packages() -> None:
    reached = import_chains("xmppd.negotiation")
    # Direct and transitive xmppd modules, the storage package's __init__ and what it imports.
    expected = {"xmppd.sasl", "xmppd.jid", "xmppd.xml", "xmppd.errors", "storage", "storage.model"}
    assert expected | {"storage.base"} <= set(reached)
    assert reached["storage.base"][:2] == ["xmppd.negotiation", "storage"]
    # storage.sqlite is imported only inside storage.open_storage(), which the core never calls.
    assert "storage.sqlite" not in reached


# --- the checker itself finds what it should -----------------------------------------------------------


def test_checker_finds_a_direct_import() -> None:
    assert "xmppd.net -> asyncio" in forbidden_chains("xmppd.net")


def test_checker_finds_a_transitive_import() -> None:
    chains = forbidden_chains("xmppd.config")
    assert chains and all(chain.startswith("xmppd.config -> ") for chain in chains)
    assert any(chain.endswith(" -> asyncio") and chain.count(" -> ") >= 2 for chain in chains)


def test_checker_reads_every_kind_of_import() -> None:
    source = """
import asyncio.subprocess
from socket import socket as s
from . import sibling
from .. import errors
from .sub import thing
if TYPE_CHECKING:
    import ssl
else:
    import selectors
def later():
    import concurrent.futures
class Body:
    import queue
"""
    found = runtime_imports(source, "xmppd.modules.x", is_package=False, in_functions=True)
    assert {"asyncio", "asyncio.subprocess", "socket", "selectors", "concurrent.futures", "queue"} <= found
    assert {"xmppd.modules", "xmppd", "xmppd.modules.sub"} <= found
    assert "ssl" not in found
    lazy = runtime_imports(source, "xmppd.modules.x", is_package=False, in_functions=False)
    assert "concurrent.futures" not in lazy and "queue" in lazy


def test_importing_the_core_does_not_load_asyncio() -> None:
    """The same, at run time and including third-party code (lxml, precis_i18n)."""
    code = (
        "import sys\n"
        f"for name in {SANS_IO!r}: __import__(name)\n"
        "print(','.join(m for m in ('asyncio', 'socket', 'ssl') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
