"""Sphinx configuration for the upgradable documentation."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

project = "upgradable"
author = "The upgradable developers"
copyright = "2026, the upgradable developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
exclude_patterns = ["_build"]
html_theme = "alabaster"
# Twisted and zope are not documented here and intersphinx needs the network:
# references to them stay plain text instead of warnings.
nitpicky = False
