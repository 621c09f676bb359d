"""Safe loading: no pickle, no unsafe deserialization, no shell=True anywhere in the package."""

import re
from pathlib import Path

import pytest

import pipeline

SOURCES = sorted(Path(pipeline.__file__).parent.rglob("*.py"))
FORBIDDEN = {
    "pickle": r"\bimport pickle\b|\bpickle\.load|cPickle|\bdill\b|joblib",
    "allow_pickle=True": r"allow_pickle\s*=\s*True",
    "shell=True": r"shell\s*=\s*True",
    "os.system": r"\bos\.system\(|\bos\.popen\(",
    "eval/exec": r"(?<![\w.])(eval|exec)\(",
    "Keras Lambda layers": r"layers\.Lambda\b|keras\.models\.load_model|safe_mode\s*=\s*False",
    "yaml.load": r"yaml\.load\(|yaml\.unsafe_load",
}


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_package_has_no_unsafe_loading(what):
    hits = [
        f"{p.name}:{i}"
        for p in SOURCES
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(FORBIDDEN[what], line)
    ]
    assert not hits, f"{what} used at {hits}"


def test_npz_files_are_loaded_without_pickle():
    loads = [
        f"{p.name}:{i}"
        for p in SOURCES
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "np.load(" in line and "allow_pickle=False" not in line
    ]
    assert not loads, f"np.load without allow_pickle=False at {loads}"
