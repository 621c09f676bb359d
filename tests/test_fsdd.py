import zipfile

import pytest

from pipeline.corpus import read_manifest
from pipeline.digits import DIGIT_WORDS, ConnectRecipe
from pipeline.errors import DataError
from pipeline.fsdd import FSDD_RECORDINGS_SHA256, FsddRecipe, download_fsdd, prepare_fsdd, recordings_digest
from tests.conftest import SHARED_FSDD, make_fsdd_folder


def test_prepare_follows_the_protocol_split(tmp_path):
    src = make_fsdd_folder(tmp_path / "fsdd")
    splits = prepare_fsdd(
        src, tmp_path / "out", 8000, FsddRecipe(train_utterances=20, test_indices=(0, 1)), ConnectRecipe(), seed=3
    )
    train, seen, unseen = (read_manifest(splits[k]) for k in ("train", "test_seen", "test_unseen"))
    assert len(train) == 20
    assert {u.speaker for u in unseen.utterances} == {"yweweler"}
    assert "yweweler" not in {u.speaker for u in train.utterances} | {u.speaker for u in seen.utterances}
    # test splits use each recording exactly once: 4 speakers x 10 digits x 2 indices; 1 speaker x 10 x 6
    assert sum(len(u.text.split()) for u in seen.utterances) == 80
    assert sum(len(u.text.split()) for u in unseen.utterances) == 60
    assert all(1 <= len(u.text.split()) <= 6 and set(u.text.split()) <= set(DIGIT_WORDS) for u in train.utterances)


def test_prepare_is_reproducible(tmp_path):
    src = make_fsdd_folder(tmp_path / "fsdd", per_digit=2)
    a = prepare_fsdd(
        src, tmp_path / "a", 8000, FsddRecipe(train_utterances=5, test_indices=(0, 0)), ConnectRecipe(), seed=1
    )
    b = prepare_fsdd(
        src, tmp_path / "b", 8000, FsddRecipe(train_utterances=5, test_indices=(0, 0)), ConnectRecipe(), seed=1
    )
    for k in a:
        assert a[k].read_text() == b[k].read_text()
        for ua, ub in zip(read_manifest(a[k]).utterances, read_manifest(b[k]).utterances):
            assert (a[k].parent / ua.audio_filepath).read_bytes() == (b[k].parent / ub.audio_filepath).read_bytes()


def test_missing_directory_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="FSDD folder .* does not exist"):
        prepare_fsdd(tmp_path / "nope", tmp_path / "out", 8000, FsddRecipe(), ConnectRecipe(), seed=1)


def _archive(tmp_path, src):
    z = tmp_path / "fsdd.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in (src / "recordings").iterdir():
            zf.write(p, f"free-spoken-digit-dataset-abc/recordings/{p.name}")
        zf.writestr("free-spoken-digit-dataset-abc/README.md", "readme")
    return z


def test_download_verifies_checksum_from_a_local_archive(tmp_path):
    src = make_fsdd_folder(tmp_path / "src", per_digit=1)
    digest = recordings_digest(src / "recordings", FsddRecipe().speakers)
    dest = download_fsdd(tmp_path / "dest", _archive(tmp_path, src).as_uri(), digest)
    assert recordings_digest(dest / "recordings", FsddRecipe().speakers) == digest


def test_download_with_wrong_checksum_installs_nothing(tmp_path):
    src = make_fsdd_folder(tmp_path / "src", per_digit=1)
    with pytest.raises(DataError, match="checksum mismatch"):
        download_fsdd(tmp_path / "dest", _archive(tmp_path, src).as_uri(), "0" * 64)
    assert not (tmp_path / "dest").exists()


def test_download_of_a_non_zip_is_refused(tmp_path):
    bad = tmp_path / "x.zip"
    bad.write_text("html error page")
    with pytest.raises(DataError, match="not a zip archive"):
        download_fsdd(tmp_path / "dest", bad.as_uri(), "0" * 64)


@pytest.mark.skipif(not (SHARED_FSDD / "recordings").is_dir(), reason="FSDD not present beside the project")
def test_real_fsdd_matches_the_shipped_checksum_and_protocol(tmp_path):
    assert recordings_digest(SHARED_FSDD / "recordings", FsddRecipe().speakers) == FSDD_RECORDINGS_SHA256
    splits = prepare_fsdd(SHARED_FSDD, tmp_path, 8000, FsddRecipe(train_utterances=10), ConnectRecipe(), seed=1)
    seen, unseen = read_manifest(splits["test_seen"]), read_manifest(splits["test_unseen"])
    assert sum(len(u.text.split()) for u in seen.utterances) == 4 * 10 * 5  # 4 speakers, 10 digits, indices 0-4
    assert sum(len(u.text.split()) for u in unseen.utterances) == 500  # every yweweler recording once
