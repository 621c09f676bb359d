"""Stage cache keys cover the code a stage runs, and the package has no import cycle."""

import shutil

import pytest

from pipeline import codehash
from pipeline.stages import stage_train


def _cycles(graph):
    """Every module that lies on an import cycle (depth-first search)."""
    state, on_cycle = {}, set()

    def visit(m, path):
        state[m] = "open"
        for n in graph.get(m, ()):
            if state.get(n) == "open":
                on_cycle.update(path[path.index(n) :])
            elif n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])
    return on_cycle


def test_the_package_has_no_import_cycle():
    assert _cycles(codehash.import_graph()) == set()


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {"a", "b", "c"}


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the package the digests read, so a test can edit a module."""
    copy = tmp_path / "pipeline"
    shutil.copytree(codehash.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codehash, "PACKAGE", copy)
    codehash._module.cache_clear()
    yield copy
    codehash._module.cache_clear()


def test_a_comment_in_manifest_py_does_not_invalidate_the_train_stage(package_copy):
    before = codehash.code_digest(stage_train, "stages", "train", "checkpoint")
    with open(package_copy / "manifest.py", "a") as fh:
        fh.write("\n# a comment an editor added\n")
    codehash._module.cache_clear()
    assert codehash.code_digest(stage_train, "stages", "train", "checkpoint") == before
    (package_copy / "train.py").write_text(
        (package_copy / "train.py").read_text().replace('"""Training loop', '"""The training loop', 1) + "\n# note\n"
    )
    codehash._module.cache_clear()
    # docstrings and comments are not code
    assert codehash.code_digest(stage_train, "stages", "train", "checkpoint") == before
    (package_copy / "train.py").write_text(
        (package_copy / "train.py").read_text().replace("else 0.95 * loss_ema", "else 0.9 * loss_ema")
    )
    codehash._module.cache_clear()
    assert codehash.code_digest(stage_train, "stages", "train", "checkpoint") != before  # code the stage runs


def test_the_train_stage_does_not_depend_on_the_manifest_or_verification_code():
    deps = codehash.closure("stages", "train", "checkpoint")
    assert "manifest" not in deps and "verify" not in deps and "build" not in deps
    assert {"methods", "model", "rnnt_loss", "features"} <= set(deps)
