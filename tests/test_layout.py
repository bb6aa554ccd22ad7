"""The repository layout and packaging promises of DESIGN.md §2."""

import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"edgetune": "edgetune", "edgetune.edge": "edge", "edgetune.export": "export", "edgetune.server": "server"}


def _package_folders() -> set[str]:
    found = set()
    for dotted, folder in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([dotted, *rel.parts]) if rel.parts else dotted)
    return found


def test_every_package_folder_is_listed_in_pyproject():
    # Prepare
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # Execute
    listed = set(config["tool"]["setuptools"]["packages"])
    # Assert: a folder missing from the list would be absent from a non-editable install.
    assert _package_folders() == listed


def test_top_level_folders_follow_the_design():
    for folder in ("edge", "export", "server", "deploy", "tests"):
        assert (ROOT / folder).is_dir(), folder


def test_building_the_command_line_loads_no_torch():
    code = (
        "import sys, edgetune.cli as c; c.build_parser(); "
        "bad = [m for m in ('torch', 'onnx', 'fastapi', 'uvicorn') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    lines = (ROOT / "README.md").read_text().split("```")[1].strip().splitlines()
    commands = [line for line in lines[1:] if line.strip() and not line.lstrip().startswith("#")]
    assert len(commands) == 2
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
