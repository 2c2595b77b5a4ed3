"""``render --out DIR``: one file per object, ``DIR/<namespace>/<kind>-<name>.yaml``.

A folder is written only when it is new, empty, or was written by render before and holds
nothing else: files a user added there are never deleted. The marker file lists what render
wrote, so a re-render replaces exactly that.
"""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.render.engine import Rendered

MARKER = ".reconciler-render"
CLUSTER_SCOPED = "_cluster"


def object_path(obj: dict[str, object]) -> str:
    """Where one object goes, relative to the output folder."""
    metadata = obj["metadata"]
    assert isinstance(metadata, dict)
    folder = metadata.get("namespace") or CLUSTER_SCOPED
    return f"{folder}/{str(obj['kind']).lower()}-{metadata['name']}.yaml"


def write_tree(out: Path, rendered: Rendered) -> int:
    """Write every object of ``rendered`` under ``out``; returns how many files."""
    try:
        return _write_tree(out, rendered)
    except OSError as exc:
        raise ReconcilerError(f"cannot write --out {out}: {exc.strerror or exc}") from None


def _write_tree(out: Path, rendered: Rendered) -> int:
    previous = _previous_files(out)
    files = {object_path(obj): document
             for obj, document in zip(rendered.objects, rendered.documents, strict=True)}
    for relative in previous:
        (out / relative).unlink(missing_ok=True)
    for folder in sorted({(out / relative).parent for relative in previous}, reverse=True):
        if folder != out and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    out.mkdir(parents=True, exist_ok=True)
    for relative, text in sorted(files.items()):
        target = out / relative
        target.parent.mkdir(exist_ok=True)
        target.write_text(text)
    listing = "".join(f"{relative}\n" for relative in sorted(files))
    (out / MARKER).write_text(f"# {rendered.environment} {rendered.revision}\n{listing}")
    return len(files)


def _previous_files(out: Path) -> list[str]:
    """What render wrote into ``out`` before; refuses a folder holding anything else."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise ReconcilerError(f"--out {out} is not a directory")
    present = sorted(Path(folder, name).relative_to(out).as_posix()
                     for folder, _, names in os.walk(out) for name in names)
    if not present:
        return []
    marker = out / MARKER
    if not marker.is_file():
        raise ReconcilerError(f"--out {out} is not empty and was not written by render: "
                              "nothing was written")
    written = [line for line in marker.read_text().splitlines()
               if line and not line.startswith("#")]
    foreign = [path for path in present if path != MARKER and path not in set(written)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ReconcilerError(f"--out {out} holds files render did not write ({shown}): move "
                              "them away or choose another folder; nothing was written")
    return written
