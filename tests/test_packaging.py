"""
The package as a user installs it: the sdist and the wheel build (the wheel from the sdist, so the sdist is complete),
pass ``twine check``, and the wheel installed into a fresh virtual environment imports, has its version, its data files
(rl-zoo3's ``trpo_lstm.yml``, the ``py.typed`` marker) and its ``sb3-trpo`` command.

The build runs without isolation (``python -m build --no-isolation``): it uses the setuptools of this environment (the
test extra installs it), so it needs no network. The fresh environment gets the wheel alone; its dependencies (torch,
Stable-Baselines3, ...) come from this environment through a ``.pth`` file, which Python reads after the fresh
environment's own site-packages, so the package itself can only come from the wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import sb3_trpo_plugin

ROOT = Path(__file__).resolve().parents[1]

#: Run inside the fresh environment, in a folder without the source tree: what an installed package must have.
CHECK_INSTALLED = """
import importlib.metadata, importlib.resources, json
import sb3_trpo_plugin
from sb3_trpo_plugin import TRPO
model = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64)
print(json.dumps({
    "file": sb3_trpo_plugin.__file__,
    "version": sb3_trpo_plugin.__version__,
    "metadata_version": importlib.metadata.version("sb3-trpo-plugin"),
    "py_typed": importlib.resources.files("sb3_trpo_plugin").joinpath("py.typed").is_file(),
    "zoo_yml": "CartPoleNoVel-v1" in importlib.resources.files("sb3_trpo_plugin.zoo").joinpath("trpo_lstm.yml").read_text(),
    "license": importlib.metadata.metadata("sb3-trpo-plugin")["License-Expression"],
}))
"""


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_sdist_and_wheel_build_check_and_install(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)], cwd=tmp_path)
    version = sb3_trpo_plugin.__version__
    sdist, wheel = dist / f"sb3_trpo_plugin-{version}.tar.gz", dist / f"sb3_trpo_plugin-{version}-py3-none-any.whl"
    assert sorted(dist.iterdir()) == sorted([sdist, wheel])
    run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])

    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {
        "LICENSE",
        "README.md",
        "pyproject.toml",
        "sb3_trpo_plugin/py.typed",
        "sb3_trpo_plugin/zoo/trpo_lstm.yml",
    } <= in_sdist
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
        entry_points = archive.read(f"sb3_trpo_plugin-{version}.dist-info/entry_points.txt").decode()
    assert {"sb3_trpo_plugin/py.typed", "sb3_trpo_plugin/zoo/trpo_lstm.yml", "sb3_trpo_plugin/zoo/trpo_mask.py"} <= in_wheel
    assert f"sb3_trpo_plugin-{version}.dist-info/licenses/LICENSE" in in_wheel
    assert not any(name.startswith(("tests/", "docs/", "benchmarks/", "examples/")) for name in in_wheel)
    assert "sb3-trpo = sb3_trpo_plugin.cli:main" in entry_points

    # A fresh environment with the wheel alone; the dependencies through a .pth file read after its own site-packages.
    # (PYTHONPATH dropped: a checkout on it would look like an installed sb3-trpo-plugin to pip and to Python.)
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    fresh = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(fresh)
    python = fresh / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)]
    run(install, env=environment)
    fresh_site = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=environment).stdout.strip()
    )
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (fresh_site / "zz_dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    installed = json.loads(run([str(python), "-c", CHECK_INSTALLED], cwd=outside, env=environment).stdout.splitlines()[-1])
    assert Path(installed["file"]).is_relative_to(fresh_site), installed["file"]  # the wheel's copy, not the checkout
    assert installed["version"] == installed["metadata_version"] == version
    assert installed["py_typed"] and installed["zoo_yml"]
    assert installed["license"] == "MIT"
    command = fresh / ("Scripts/sb3-trpo.exe" if os.name == "nt" else "bin/sb3-trpo")
    assert run([str(command), "--version"], cwd=outside, env=environment).stdout.strip() == f"sb3-trpo {version}"


def test_pre_commit_runs_the_linters_of_make_lint() -> None:
    import yaml

    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff-check", "ruff-format", "mypy"} <= hooks.keys()
    # mypy checks what [tool.mypy] names, in the project's environment (the installed torch and SB3), as make lint does.
    assert hooks["mypy"]["language"] == "system" and hooks["mypy"]["pass_filenames"] is False
