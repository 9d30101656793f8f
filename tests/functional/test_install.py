"""``pip install .`` in a fresh virtualenv gives the operator CLI as a console command, as a user would get it: the
wheel is built by pip (with its build isolation) and its dependencies come from the package index."""

from __future__ import annotations

import shutil
import subprocess
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pip_install_gives_a_working_cmk_rotation_command(tmp_path: Path) -> None:
    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    source = tmp_path / "source"  # setuptools builds in the source tree: a copy keeps the checkout clean
    shutil.copytree(ROOT / "rotation", source / "rotation", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", source)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", wheels, source], check=True, cwd=tmp_path
    )
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as built:
        tops = {name.split("/")[0] for name in built.namelist() if not name.split("/")[0].endswith(".dist-info")}
        entry_points = next(n for n in built.namelist() if n.endswith(".dist-info/entry_points.txt"))
        assert "cmk-rotation = rotation.cli:console" in built.read(entry_points).decode()
    assert tops == {"rotation"}  # not the emulator, the tests, the bench or the demo

    subprocess.run([python, "-m", "pip", "install", "--quiet", wheel], check=True, cwd=tmp_path)
    command = env_dir / "bin" / "cmk-rotation"
    helped = subprocess.run([command, "--help"], capture_output=True, text=True, cwd=tmp_path, env={})
    assert helped.returncode == 0, helped.stderr
    for name in ("status", "plan", "preflight", "rotate", "reconcile"):
        assert name in helped.stdout
    # Without settings it says which one is missing, from the installed package, not this checkout.
    bare = subprocess.run([command, "status"], capture_output=True, text=True, cwd=tmp_path, env={})
    assert bare.returncode == 2 and "ROTATION_TARGETS" in bare.stderr
    where = subprocess.run(
        [python, "-c", "import rotation; print(rotation.__file__)"], capture_output=True, text=True, cwd=tmp_path
    )
    assert where.stdout.startswith(str(env_dir))
