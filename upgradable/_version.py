# The one place the version is written: pyproject.toml reads it from here
# (hatchling's [tool.hatch.version]), so the package metadata and
# upgradable.__version__ cannot disagree.
__version__ = "0.1.0.dev0"
