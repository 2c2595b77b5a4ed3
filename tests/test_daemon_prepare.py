"""The daemon loads and renders each new commit in a child interpreter and keeps only what a
pass needs: the child's render is the one this process would make, the caches it hands back
make the next commit render only what changed, and what goes wrong in it is reported as the
same error here."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import sops
from reconciler.daemon.prepare import prepare_in_child
from reconciler.errors import ReconcilerError
from reconciler.git.store import GitTree
from reconciler.load.loader import load_state
from reconciler.render.engine import render_environment

from conftest import commit_all, edit, write

CLUSTER = "nonprod-eu"


def test_the_child_renders_each_environment_of_the_cluster_as_this_process_would(
        repo: Path, demo_key: Path) -> None:
    commit = commit_all(repo, "state")
    prepared = prepare_in_child(repo, commit, CLUSTER, demo_key, {})
    assert sorted(prepared.environments) == ["development", "staging"], \
        "the environments that include the cluster, production (prod-eu, prod-us) not"
    state = load_state(GitTree(repo, commit))
    for name, environment in prepared.environments.items():
        assert environment.rendered is not None, environment.error
        local = render_environment(state, name, cluster=CLUSTER, documents=False,
                                   decrypt=sops.decryptor(lambda: sops.identities(demo_key),
                                                          name))
        assert environment.rendered.unpack().objects == local.objects
        assert {t.component for t in environment.targets} == \
            {r.ref for r in state.releases_in(name)}


def test_the_caches_it_hands_back_render_only_what_the_next_commit_changed(
        repo: Path, demo_key: Path) -> None:
    first = prepare_in_child(repo, commit_all(repo, "state"), CLUSTER, demo_key, {})
    edit(repo, "environments/staging/shop/checkout/config.yaml", "sandbox.payments",
         "sandbox2.payments")
    second = prepare_in_child(repo, commit_all(repo, "scale checkout"), CLUSTER, demo_key,
                              first.caches)
    staging = second.environments["staging"].rendered
    assert staging is not None
    assert staging.header.units_rendered == 2, "checkout's folders: component/ and its type's"
    assert staging.header.units_cached > 5


def test_a_missing_key_fails_only_the_environment_whose_secrets_need_it(repo: Path) -> None:
    prepared = prepare_in_child(repo, commit_all(repo, "state"), CLUSTER,
                                repo / "no-such-key.txt", {})
    development = prepared.environments["development"]
    assert development.rendered is None and "cannot read the age key file" in development.error
    assert prepared.environments["staging"].rendered is not None
    assert prepared.failed, "worth preparing again: the key may be mounted later"


def test_a_state_that_does_not_load_is_the_same_error_as_in_this_process(repo: Path) -> None:
    write(repo, "organization.yaml", "kind: Organization\nname: [not, a, name]\n")
    commit = commit_all(repo, "break the organization")
    with pytest.raises(ReconcilerError) as raised:
        prepare_in_child(repo, commit, CLUSTER, None, {})
    with pytest.raises(ReconcilerError) as local:
        load_state(GitTree(repo, commit))
    assert str(raised.value) == str(local.value)
    assert str(raised.value).startswith("organization.yaml:1: ")


def test_a_commit_that_is_not_there_is_the_same_error_as_in_this_process(repo: Path) -> None:
    commit_all(repo, "state")
    with pytest.raises(ReconcilerError) as raised:
        prepare_in_child(repo, "0" * 40, CLUSTER, None, {})
    with pytest.raises(ReconcilerError) as local:
        load_state(GitTree(repo, "0" * 40))
    assert str(raised.value) == str(local.value)

