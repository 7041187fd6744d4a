"""
The API reference documents every public name: each name in the ``__all__``
of a public module is named by a directive in docs/api.rst.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from zope.interface.interface import InterfaceClass

API = Path(__file__).resolve().parent.parent / "docs" / "api.rst"

PUBLIC_MODULES = [
    "upgradable",
    "upgradable.interfaces",
    "upgradable.plugin",
    "upgradable.client",
    "upgradable.app.tap",
    "upgradable.app.tunnel",
    "upgradable.protocols.echo",
    "upgradable.protocols.irc",
    "upgradable.protocols.websocket",
    "upgradable.protocols.h2c",
    "upgradable.protocols.relay",
]

_DIRECTIVE = re.compile(r"^\.\. (auto\w+|py:\w+):: (\S+)\n((?:   .*\n|\n)*)", re.M)


def documented() -> set[str]:
    """Every dotted name docs/api.rst documents, members included."""
    names: set[str] = set()
    for kind, target, body in _DIRECTIVE.findall(API.read_text()):
        names.add(target)
        if kind != "automodule":
            continue
        members = re.search(r":members:(.*)", body)
        if members is None or not members.group(1).strip():
            # autodoc documents the whole __all__ of the module, except zope
            # interfaces, which only autointerface renders.
            module = importlib.import_module(target)
            names.update(
                f"{target}.{n}"
                for n in module.__all__
                if not isinstance(getattr(module, n), InterfaceClass)
            )
        else:
            names.update(f"{target}.{n.strip()}" for n in members.group(1).split(","))
    return names


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_everyPublicNameIsInTheAPIReference(module: str) -> None:
    """docs/api.rst names every entry of the module's ``__all__``."""
    missing = [
        name
        for name in importlib.import_module(module).__all__
        if f"{module}.{name}" not in documented()
    ]
    assert missing == [], f"add {missing} of {module} to docs/api.rst"


def test_theReferenceCoversEveryPublicModule() -> None:
    """Each public module (no ``_`` in its path) is in the list above."""
    top = Path(importlib.import_module("upgradable").__file__ or "").parent
    found = {
        ".".join(("upgradable", *path.relative_to(top).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for path in top.rglob("*.py")
        if not any(
            part.startswith("_") and part != "__init__.py" for part in path.relative_to(top).parts
        )
    }
    found.discard("upgradable.protocols")  # a namespace for the samples, no names of its own
    found.discard("upgradable.app")  # the same for the twistd applications
    assert sorted(found) == sorted(PUBLIC_MODULES)
