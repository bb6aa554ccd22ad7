"""Packaging that the folder layout needs: metadata lives in pyproject.toml.

The programs live in top-level folders (DESIGN.md §2) and install as subpackages of
``edgetune``. The package list is computed from those folders, never kept by hand, so a new
subfolder with an ``__init__.py`` is installed without anyone remembering to list it.
"""

from pathlib import Path

from setuptools import setup

#: installed package -> the folder that holds it
PACKAGE_DIRS = {
    "edgetune": "app",
    "edgetune.contract": "contract",
    "edgetune.edge": "edge",
    "edgetune.export": "export",
    "edgetune.server": "server",
}


def find_packages() -> list[str]:
    root = Path(__file__).resolve().parent
    found = []
    for package, folder in PACKAGE_DIRS.items():
        for init in sorted((root / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(root / folder).parts
            found.append(".".join((package, *rel)))
    return found


setup(packages=find_packages(), package_dir=PACKAGE_DIRS)
