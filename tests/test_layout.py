"""The repository layout and packaging promises of DESIGN.md §2."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_regular_install_imports_from_the_repository_root(tmp_path):
    # Prepare: a non-editable install of the working tree into a folder of its own.
    source, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, text=True)
    code = ("import importlib.resources, edgetune, edgetune.cli as c, edgetune.contract.manifest, edgetune.edge.pipeline, "
            "importlib.resources; c.build_parser(); "
            "assert (importlib.resources.files('edgetune.server') / 'static' / 'dashboard.html').is_file(); "
            "print(edgetune.__file__)")
    # Execute: from the repository root, where the source folders lie beside the installed package.
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    # Assert: the installed package is the one imported, every subpackage included.
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(target)


def test_top_level_folders_follow_the_design():
    for folder in ("contract", "edge", "export", "server", "deploy", "tests"):
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
