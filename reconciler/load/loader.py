"""Read a state repo, from a work tree or a Git commit, into the model, and check it.

Loading never stops at the first problem: every file is parsed and schema-checked,
then references between files are checked, and all problems are raised together as
one ``InvalidState``. Both readers list the same paths and bytes, so a work tree and
the commit it was made from give identical results.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from reconciler.cache import Cache, code_fingerprint, key_of
from reconciler.errors import InvalidState, Problem, ReconcilerError
from reconciler.load import parse, schemas
from reconciler.load.readers import TreeReader
from reconciler.load.references import ReferenceChecker
from reconciler.model.kinds import Cluster, Organization, Release, ReleaseKey, SecretFile, Secrets, State
from reconciler.model.paths import (
    ORGANIZATION_FILE,
    STATE_FOLDERS,
    TEMPLATES_FOLDER,
    classify,
    cluster_path,
    is_free_file,
    legacy_secrets,
)
from reconciler.yamlio import MAX_FILE_BYTES, Document, load_state_file

_log = logging.getLogger(__name__)


def load_state(reader: TreeReader, cache: Cache | None = None) -> State:
    """The whole state at the reader's revision, or ``InvalidState`` listing every problem.

    ``cache`` keeps each valid file's parsed data by its bytes, so the next load parses and
    checks only the files that changed (its caller saves it)."""
    state, problems = load_state_and_problems(reader, cache)
    if problems:
        raise InvalidState(problems)
    return state


def load_state_and_problems(
    reader: TreeReader, cache: Cache | None = None,
) -> tuple[State, tuple[Problem, ...]]:
    """The state as far as it loads (broken files left out) and every problem; only a
    missing or broken organization.yaml leaves nothing to load (``InvalidState``)."""
    loader = _Loader(reader, cache if cache is not None else Cache("state"))
    state = loader.load()
    _log.debug("state files: %d parsed, %d from the cache", loader.parsed, loader.cached)
    problems = tuple(sorted(set(loader.problems)))
    notices = tuple(sorted(set(loader.notices)))
    return dataclasses.replace(state, problems=problems, notices=notices), problems


def load_cluster(reader: TreeReader, name: str) -> tuple[Cluster | None, tuple[Problem, ...]]:
    """Only ``clusters/<name>.yaml``, parsed and schema-checked, for a caller that needs
    nothing else (a daemon finding its kubeconfig context before its first full load):
    the cluster (None if its file does not parse or fails its schema) and the file's
    problems. A missing file is ``ReconcilerError`` naming the clusters there are."""
    path = cluster_path(name)
    loader = _Loader(reader, Cache("state"))
    try:
        if classify(path)[0] != "Cluster":
            raise KeyError(path)
        document = loader._parse(path, "Cluster")
    except (KeyError, OSError, ValueError):  # missing, or a folder where a file should be
        names = sorted(groups[0] for entry, _ in reader.entries()
                       for kind, groups in [classify(entry)] if kind == "Cluster")
        raise ReconcilerError(f"unknown cluster {name!r} (clusters: {', '.join(names)})") \
            from None
    if document is None:
        return None, tuple(loader.problems)
    loader._same_name(path, document.data["name"], name, "file name")
    return parse.cluster(document.data, path), tuple(loader.problems)


class _Loader:
    def __init__(self, reader: TreeReader, cache: Cache) -> None:
        self.reader = reader
        self.cache = cache
        self.salt = code_fingerprint()
        self.parsed = self.cached = 0
        self.problems: list[Problem] = []
        self.notices: list[Problem] = []
        self.documents: dict[str, Document] = {}
        self.broken: set[tuple[str, tuple[str, ...]]] = set()

    def problem(self, path: str, where: list[Any] | int, message: str) -> None:
        self.problems.append(Problem(path, self._line(path, where), message))

    def notice(self, path: str, where: list[Any] | int, message: str) -> None:
        self.notices.append(Problem(path, self._line(path, where), message))

    def _line(self, path: str, where: list[Any] | int) -> int:
        if isinstance(where, int):
            return where
        document = self.documents.get(path)
        return document.line_of(where) if document else 0

    def load(self) -> State:
        files: set[str] = set()
        templates: dict[str, str] = {}
        typed: list[tuple[str, str, tuple[str, ...]]] = []
        for path, is_link in self.reader.entries():
            if is_link:
                if path.startswith((*STATE_FOLDERS, TEMPLATES_FOLDER)):
                    self.problem(path, 0, "symbolic links are not allowed in a state repo")
                continue
            files.add(path)
            if path.startswith(TEMPLATES_FOLDER):
                text = self._read_text(path)
                if text is not None:
                    templates[path.removeprefix(TEMPLATES_FOLDER)] = text
                continue
            kind, groups = classify(path)
            if kind:
                typed.append((path, kind, groups))
            elif legacy_secrets(path):
                self.problem(path, 0, "several secrets in one SOPS file are no longer read (each "
                             "secret is its own secrets/<KEY>.sops.yaml, so setting one needs "
                             "only public keys): split it with `reconciler secret migrate --env "
                             f"{path.split('/')[1]}`, which needs a key that decrypts it")
            elif path.startswith(STATE_FOLDERS) and not is_free_file(path):
                self.problem(path, 0, "unexpected file: not part of the state repo layout")
        valid: list[tuple[str, str, tuple[str, ...]]] = []
        broken = self.broken
        for path, kind, groups in typed:
            if self._parse(path, kind) is None:
                broken.add((kind, groups))
            else:
                valid.append((path, kind, groups))
        if ("Organization", ()) in broken:
            raise InvalidState(self.problems)
        if not any(kind == "Organization" for _, kind, _ in valid):
            self.problem(ORGANIZATION_FILE, 0, "missing: every state repo needs one")
            raise InvalidState(self.problems)
        state = self._build(valid, frozenset(files), templates)
        # References are checked even when some files are broken, so one run reports
        # every problem; names whose own file is broken count as existing.
        ReferenceChecker(state, self.problem, frozenset(broken), self.notice).check()
        return state

    def _read_text(self, path: str) -> str | None:
        content = self.reader.read(path, MAX_FILE_BYTES)
        if len(content) > MAX_FILE_BYTES:
            self.problem(path, 0, f"file is larger than {MAX_FILE_BYTES // 1024} KiB")
            return None
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError:
            self.problem(path, 0, "file is not valid UTF-8")
            return None

    def _parse(self, path: str, kind: str) -> Document | None:
        content = self.reader.read(path, MAX_FILE_BYTES)
        key = key_of(self.salt, kind, content)
        data = self.cache.get(key)
        if isinstance(data, dict):
            self.cached += 1
            document = self.documents[path] = Document(path, data, content)
            return document
        self.parsed += 1
        try:
            document = load_state_file(path, content)
        except ReconcilerError as exc:
            self.problems.extend(exc.problems)
            return None
        self.documents[path] = document
        kind_problem = schemas.expected_kind_problem(document, kind)
        if kind_problem:
            self.problems.append(kind_problem)
            return None
        found = schemas.validate(document, kind)
        self.problems.extend(found)
        if found:
            return None
        self.cache.put(key, document.data)
        return document

    def _build(
        self, valid: list[tuple[str, str, tuple[str, ...]]], files: frozenset[str],
        templates: dict[str, str],
    ) -> State:
        parts: dict[str, Any] = {
            name: {} for name in ("clusters", "pipelines", "environments", "projects",
                                  "components", "builds", "releases", "component_configs",
                                  "environment_configs", "secrets", "third_party")
        }
        organization: Organization | None = None
        for path, kind, groups in valid:
            data = self.documents[path].data
            if kind == "Organization":
                organization = parse.organization(data)
            elif kind == "Cluster":
                self._same_name(path, data["name"], groups[0], "file name")
                parts["clusters"][groups[0]] = parse.cluster(data, path)
            elif kind == "Pipeline":
                self._same_name(path, data["name"], groups[0], "file name")
                parts["pipelines"][groups[0]] = parse.pipeline(data, path)
            elif kind == "Environment":
                self._same_name(path, data["name"], groups[0], "folder name")
                parts["environments"][groups[0]] = parse.environment(data, path)
            elif kind == "Project":
                self._same_name(path, data["name"], groups[0], "folder name")
                parts["projects"][groups[0]] = parse.project(data, path)
            elif kind == "Component":
                self._same_name(path, data["name"], groups[1], "folder name")
                parts["components"][groups] = parse.component(groups[0], data, path)
            elif kind == "Config" and len(groups) == 2:
                parts["component_configs"][groups] = parse.config(data, path)
            elif kind == "Config":
                parts["environment_configs"][groups] = parse.config(data, path)
            elif kind == "Build":
                self._same_name(path, data["component"], f"{groups[0]}/{groups[1]}", "folder")
                self._same_name(path, data["commit"], groups[2], "file name", "commit")
                parts["builds"][groups] = parse.build_record(groups, data, path)
            elif kind == "Release":
                self._same_name(path, data["component"], f"{groups[1]}/{groups[2]}", "folder",
                                "component")
                self._release(parts["releases"], parse.release(groups[0], data, path),
                              groups[3])
            elif kind == "Secrets":
                secret = self._secret_file(path, groups[3], data)
                if secret is None:
                    self.broken.add((kind, groups))
                else:
                    parts["secrets"].setdefault(groups[:3], {})[secret.key] = secret
            elif kind == "ThirdPartyService":
                self._same_name(path, data["name"], groups[0], "file name")
                parts["third_party"][groups[0]] = parse.third_party(data, path)
        assert organization is not None
        parts["secrets"] = {key: Secrets(files) for key, files in parts["secrets"].items()}
        return State(organization=organization, revision=self.reader.revision, files=files,
                     templates=templates, **parts)

    def _release(self, releases: dict[ReleaseKey, Release], release: Release,
                 file_major: str) -> None:
        """One release per API major line: ``release-<major>.yaml`` must hold that major,
        and no two files may hold the same one."""
        if file_major and file_major != release.major:
            self.problem(release.path, ["version"], f"version {release.version} is not "
                         f"{file_major}, the major the file's name says")
            self.broken.add(("Release", (*release.key[:3], file_major)))
            return
        other = releases.get(release.key)
        if other is not None:
            first, second = sorted((other.path, release.path))
            self.problem(second, ["version"], f"{first} releases {release.major} too: one "
                         f"file per major ({release.major} is {release.version} here, "
                         f"{other.version} there)")
            return
        releases[release.key] = release

    def _secret_file(self, path: str, key: str, data: Mapping[str, Any]) -> SecretFile | None:
        """One secret per file, named by its key: replacing it then never touches another."""
        found = sorted(data["data"])
        if found != [key]:
            held = ", ".join(found) or "nothing"
            self.problem(path, ["data"], f"holds {held}: a secrets file holds exactly one "
                         f"secret, the one its name says ({key})")
            return None
        recipients = tuple(str(entry.get("recipient", "")) for entry in data["sops"].get("age") or []
                           if isinstance(entry, Mapping))
        return SecretFile(key, data["data"][key], recipients, path, data)

    def _same_name(self, path: str, inside: str, outside: str, what: str,
                   key: str = "name") -> None:
        if inside != outside:
            where = "component" if key == "component" else key
            self.problem(path, [where], f"{key} {inside!r} does not match the {what} {outside!r}")
