"""Sphinx configuration for the upgradable documentation."""

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

project = "upgradable"
author = "The upgradable developers"
copyright = "2026, the upgradable developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode", "repoze.sphinx.autointerface"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
exclude_patterns = ["_build"]
html_theme = "alabaster"
# Twisted and zope are not documented here and intersphinx needs the network:
# references to them stay plain text instead of warnings.
nitpicky = False


def _nameInterfaces(app: Any, config: Any) -> None:
    """
    Give zope interfaces a ``__qualname__``, so that type hints naming one
    render as a link to it (``upgradable.interfaces.IUpgradeHandler``)
    rather than as ``<InterfaceClass ...>``: Sphinx formats an annotation
    without a qualified name by its repr.
    """
    from zope.interface.interface import InterfaceClass

    # Both import the interfaces their hints name.
    import upgradable.app.tap
    import upgradable.client  # noqa: F401

    for module in list(sys.modules.values()):
        for value in list(vars(module).values()):
            if isinstance(value, InterfaceClass) and "__qualname__" not in vars(value):
                value.__qualname__ = value.__name__


def setup(app: Any) -> None:
    app.connect("config-inited", _nameInterfaces)
