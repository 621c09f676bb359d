import json

import pytest

from pipeline.corpus import Utterance, read_manifest, write_manifest
from pipeline.errors import DataError
from pipeline.tokenizer import CharTokenizer


def test_manifest_round_trip(tmp_path):
    utts = [Utterance("a", "a.wav", 1.5, "one two", "s1"), Utterance("b", "/abs/b.wav", 0.5, "nine", "s2")]
    write_manifest(tmp_path / "m.jsonl", utts)
    c = read_manifest(tmp_path / "m.jsonl")
    assert list(c.utterances) == utts and c.root == tmp_path
    assert Utterance.from_dict(utts[0].to_dict()) == utts[0]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ('{"audio_filepath": "a.wav", "duration": 1}', "missing field `text`"),
        ('{"audio_filepath": "a.wav", "duration": 1, "text": "   "}', "transcript `text` is empty"),
        ('{"audio_filepath": "a.wav", "duration": -1, "text": "one"}', "above 0 and at most 3600"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    p = tmp_path / "m.jsonl"
    p.write_text('{"audio_filepath": "x.wav", "duration": 1, "text": "one"}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"m\.jsonl:2: .*{message}"):
        read_manifest(p)


def test_duplicate_ids_and_empty_corpus(tmp_path):
    p = tmp_path / "m.jsonl"
    row = json.dumps({"id": "u1", "audio_filepath": "x.wav", "duration": 1, "text": "one"})
    p.write_text(row + "\n" + row + "\n")
    with pytest.raises(DataError, match="duplicate utterance id 'u1'"):
        read_manifest(p)
    p.write_text("\n")
    with pytest.raises(DataError, match="holds no utterances"):
        read_manifest(p)


def test_relative_path_may_not_escape_the_manifest_folder(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps({"audio_filepath": "../../etc/passwd", "duration": 1, "text": "one"}) + "\n")
    c = read_manifest(p)
    with pytest.raises(DataError, match="escapes the manifest folder"):
        c.audio_path(c.utterances[0])


def test_tokenizer_round_trip_and_unknown_characters():
    tok = CharTokenizer.fit(["one two", "Three"])
    assert CharTokenizer.from_dict(tok.to_dict()) == tok
    assert tok.vocab[0] == "<blank>" and tok.blank_id == 0
    assert tok.decode(tok.encode("  two  ONE ")) == "two one"
    with pytest.raises(DataError, match="outside the vocabulary: 'z'"):
        tok.encode("zero")
    with pytest.raises(DataError, match="empty"):
        tok.encode("  ")
