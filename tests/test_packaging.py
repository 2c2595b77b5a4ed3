"""A plain (non-editable) install carries the templates, schemas and example, and works
from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_its_data_and_runs_outside_the_source_tree(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), "-q"],
        capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("reconciler-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    for expected in ("reconciler/_data/templates/lib/deployment.yaml.j2",
                     "reconciler/_data/schemas/component.schema.json",
                     "reconciler/_data/example-state-repo/organization.yaml"):
        assert expected in names
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}

    def reconciler(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reconciler", *args],
                              capture_output=True, text=True, cwd=elsewhere, env=environment)

    located = subprocess.run(
        [sys.executable, "-c", "import reconciler; print(reconciler.__file__)"],
        capture_output=True, text=True, cwd=elsewhere, env=environment)
    assert located.stdout.startswith(str(tmp_path / "site")), "must test the wheel's copy"
    assert reconciler("init", "demo", "--example").returncode == 0
    assert reconciler("--repo", "demo", "validate").returncode == 0
    rendered = reconciler("--repo", "demo", "render", "--env", "staging")
    assert rendered.returncode == 0, rendered.stderr
    assert "kind: Deployment" in rendered.stdout
