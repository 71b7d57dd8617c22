"""Every module names its spec, and the committed DOAP file lists what the modules declare."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import xmppd.modules
from xmppd.doap import render

MODULES = [info.name for info in pkgutil.iter_modules(xmppd.modules.__path__)]


def test_committed_doap_is_up_to_date() -> None:
    committed = (Path(__file__).parents[2] / "xmppd.doap").read_text()
    assert committed == render(), "run `make doap` (python -m xmppd.doap > xmppd.doap)"


# Modules that implement no protocol of their own: the web chat serves a client (Converse.js).
NO_PROTOCOL_OF_THEIR_OWN = {"webchat"}


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_its_protocols_and_setup(name: str) -> None:
    module = importlib.import_module(f"xmppd.modules.{name}")
    assert module.__doc__ and ("RFC" in module.__doc__ or "XEP" in module.__doc__)
    assert isinstance(module.PROTOCOLS, list)
    assert module.PROTOCOLS or name in NO_PROTOCOL_OF_THEIR_OWN, f"{name} has no PROTOCOLS"
    assert callable(module.setup)


def test_doap_lists_core_and_module_specs() -> None:
    doap = render()
    assert "rfc6120" in doap and "xep-0199.html" in doap and "xep-0077.html" in doap
