"""A plain (non-editable) install carries the templates, schemas and example, and works
from any directory; so does the image the Dockerfile builds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import yaml

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


# --- The image (Dockerfile). No image is built in the tests: the base image comes from
# Docker Hub, which the test machines cannot reach (deploy/README.md). What the image would
# hold is checked from the Dockerfile's own steps instead.

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
            for line in lines if line and not line.startswith("#")]


def test_every_file_the_image_copies_from_the_source_tree_exists() -> None:
    copies = [arguments.split() for keyword, arguments in instructions() if keyword == "COPY"]
    sources = [source for *sources, _ in copies if not sources[0].startswith("--from")
               for source in sources]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source


def test_the_image_runs_as_the_user_the_deployment_requires() -> None:
    users = [arguments for keyword, arguments in instructions() if keyword == "USER"]
    deployment = next(yaml.safe_load_all((ROOT / "deploy/deployment.yaml").read_text()))
    pod = deployment["spec"]["template"]["spec"]
    assert users == [str(pod["securityContext"]["runAsUser"])]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert any(keyword == "RUN" and "useradd" in arguments and f"--uid {users[0]} " in arguments
               for keyword, arguments in instructions())


BUILD_STEP = "pip wheel --no-cache-dir --wheel-dir /wheels ."


def test_the_images_build_steps_give_a_working_reconciler(tmp_path: Path) -> None:
    """The build stage's context holds only what it copies; its wheels install offline into a
    fresh Python, whose `reconciler` (the entrypoint) works from any directory."""
    steps = instructions()
    assert ("RUN", BUILD_STEP) in steps
    context = tmp_path / "context"
    context.mkdir()
    for keyword, arguments in steps[:steps.index(("RUN", BUILD_STEP))]:
        if keyword == "COPY":
            *sources, _ = arguments.split()
            for source in sources:
                copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy
                copy(ROOT / source, context / source)
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", *BUILD_STEP.replace("/wheels", str(wheels))
                            .split()], cwd=context, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    venv.create(tmp_path / "python", with_pip=True)
    python = tmp_path / "python/bin"
    offline = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # nothing but the image's wheels
    installed = subprocess.run([python / "pip", "install", "--no-cache-dir", "--no-index",
                                *map(str, wheels.glob("*.whl"))], capture_output=True, text=True,
                               env=offline)
    assert installed.returncode == 0, installed.stderr
    assert ("ENTRYPOINT", '["reconciler"]') in steps
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def reconciler(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python / "reconciler", *args], capture_output=True, text=True,
                              cwd=elsewhere, env={"PATH": os.environ["PATH"],
                                                  "HOME": str(elsewhere)})

    assert reconciler("--help").returncode == 0
    created = reconciler("init", "demo", "--example")
    assert created.returncode == 0, created.stderr
    validated = reconciler("--repo", "demo", "validate")
    assert validated.returncode == 0, validated.stderr
