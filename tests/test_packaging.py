"""
Packaging: the wheel carries the twistd plugin in the shared twisted/plugins
namespace and nothing that would break other packages, and both a regular and
an editable install leave the plugin visible to twistd.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import pytest

import upgradable

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def pip(python: Path | str, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # A stray plugin cache must not end up in the wheel.
    cache = ROOT / "twisted" / "plugins" / "dropin.cache"
    existed = cache.exists()
    if not existed:
        cache.write_bytes(b"stale")
    try:
        pip(sys.executable, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), ".")
    finally:
        if not existed:
            cache.unlink()
    [built] = out.glob("upgradable-*.whl")
    return built


def test_wheelShipsThePluginAndNoNamespaceInit(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/upgradable_server.py" in names
    assert "upgradable/__init__.py" in names
    assert "upgradable/py.typed" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert not [n for n in names if n.endswith("dropin.cache") or "__pycache__" in n]
    assert not [n for n in names if n.startswith(("tests/", "docs/", "bench/"))]


def wheelMetadata(wheel: Path) -> tuple[Any, set[str]]:
    """The wheel's METADATA headers and the names of its files."""
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
    return HeaderParser().parsestr(archive.read(metadata).decode("utf-8")), names


def test_versionIsOneValueInThePackageTheMetadataAndTheWheel(wheel: Path) -> None:
    """upgradable.__version__ is what the installed metadata and the built wheel say."""
    import importlib.metadata

    from upgradable import _version

    assert upgradable.__version__ is _version.__version__
    assert upgradable.__version__ == importlib.metadata.version("upgradable")
    headers, _ = wheelMetadata(wheel)
    assert headers["Version"] == upgradable.__version__
    assert wheel.name.startswith(f"upgradable-{upgradable.__version__}-")


def test_wheelCarriesTheLicenseFileAndTheMITExpression(wheel: Path) -> None:
    headers, names = wheelMetadata(wheel)
    assert headers["License-Expression"] == "MIT"
    assert headers.get_all("License-File") == ["LICENSE"]
    [licensed] = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    text = zipfile.ZipFile(wheel).read(licensed).decode("utf-8")
    assert text == (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")


def test_sdistHoldsTheLicenseTheChangelogAndItsFragments(tmp_path: Path) -> None:
    """What towncrier needs at release time travels with the source."""
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)],
        check=True, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    [sdist] = tmp_path.glob("upgradable-*.tar.gz")
    assert sdist.name == f"upgradable-{upgradable.__version__}.tar.gz"
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "NEWS.md", "README.md", "pyproject.toml", "upgradable/_version.py"} <= names
    fragments = {p.relative_to(ROOT).as_posix() for p in (ROOT / "changelog.d").iterdir()}
    assert "changelog.d/README.md" in fragments
    assert fragments <= names


def nestedVenv(tmp_path: Path) -> Path:
    """
    A fresh venv that sees this environment's dependencies (Twisted...) by a
    path entry, but not this environment's install of upgradable.
    """
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    python = target / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    outer = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    Path(purelib, "outer.pth").write_text("\n".join(dict.fromkeys(outer)) + "\n")
    return python


PROBE = """
import sys
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
import twisted.plugins
makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "upgradable"]
assert len(makers) == 1, makers
print(sys.modules["twisted.plugins.upgradable_server"].__file__)
import upgradable
print(upgradable.__file__)
"""


@pytest.mark.parametrize("editable", [False, True], ids=["regular", "editable"])
def test_installLeavesThePluginVisibleToTwistd(editable: bool, wheel: Path, tmp_path: Path) -> None:
    python = nestedVenv(tmp_path)
    if editable:
        pip(python, "install", "--no-deps", "--no-build-isolation", "-e", str(ROOT))
    else:
        pip(python, "install", "--no-deps", str(wheel))
    probe = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    pluginFile, packageFile = map(Path, probe.stdout.split())
    home = ROOT if editable else tmp_path / "venv"
    assert pluginFile.is_relative_to(home), pluginFile
    assert packageFile.is_relative_to(home), packageFile
    # And twistd itself lists the command.
    helpText = subprocess.run(
        [str(python), "-m", "twisted", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert "upgradable" in helpText.stdout, helpText.stdout + helpText.stderr
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()


def test_publicNamesAreThePrivateObjects() -> None:
    from upgradable import _channel, _decisions, _registry, _resource, _site

    assert upgradable.UpgradableHTTPChannel is _channel.UpgradableHTTPChannel
    assert upgradable.UpgradableSite is _site.UpgradableSite
    assert upgradable.UpgradeRegistry is _registry.UpgradeRegistry
    assert upgradable.UpgradeRequired is _resource.UpgradeRequired
    for name in ("Accept", "Decline", "Reject", "UpgradeRequest", "Decision"):
        assert getattr(upgradable, name) is getattr(_decisions, name)
    assert sorted(upgradable.__all__) == sorted(
        name for name in dir(upgradable) if not name.startswith("_") and name[0].isupper()
    )


def test_theLibraryAndThePluginFilesImportNothingOfTheApplication() -> None:
    """
    The library, the plugin class and the plugin files (which every plugin
    scan imports) load without the twistd applications in upgradable.app.
    """
    code = (
        "import sys\n"
        "import upgradable, upgradable.client, upgradable.interfaces, upgradable.plugin\n"
        "import twisted.plugins.upgradable_samples, twisted.plugins.upgradable_server\n"
        "import twisted.plugins.upgradable_tunnel\n"
        "print(sorted(m for m in sys.modules if m.startswith('upgradable.app')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout == "[]\n", done.stderr
