"""Tags in the artefact store (subsets/tags.py): round trip, atomic files, removal, refusals, id lists."""
from __future__ import annotations

import json
import threading

import pytest

from ifbeta.errors import StoreError
from ifbeta.store import Store
from ifbeta.subsets import tags

FINGERPRINT = "0123456789abcdef" + "f" * 48
POOL = [f"pool/{i}" for i in range(20)]


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "cache")


def test_nothing_tagged_is_an_empty_mapping(store):
    assert tags.load(store, FINGERPRINT) == {}
    assert not (store.root / "tags").exists()  # reading writes nothing


def test_add_and_load_round_trip_sorted_unique(store):
    mapping = tags.add(store, FINGERPRINT, tags.EXCLUDE, ["pool/3", "pool/1", "pool/3"])
    assert mapping == {tags.EXCLUDE: ["pool/1", "pool/3"]}
    mapping = tags.add(store, FINGERPRINT, tags.SUSPECT, ["pool/2"])
    mapping = tags.add(store, FINGERPRINT, tags.EXCLUDE, ["pool/0", "pool/1"])
    assert mapping == {tags.EXCLUDE: ["pool/0", "pool/1", "pool/3"], tags.SUSPECT: ["pool/2"]}
    assert tags.load(store, FINGERPRINT) == mapping
    assert tags.load(store, "f" * 64) == {}  # another pool sees none of them


def test_the_file_lives_under_tags_and_is_written_atomically(store, monkeypatch):
    tags.add(store, FINGERPRINT, "mine", ["pool/1"])
    file = store.root / "tags" / f"{FINGERPRINT[:16]}.json"
    assert tags.path(store, FINGERPRINT) == file
    document = json.loads(file.read_text())
    assert document == {"fingerprint": FINGERPRINT, "tags": {"mine": ["pool/1"]}}

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tags.json, "dump", broken_dump)
    with pytest.raises(OSError):
        tags.add(store, FINGERPRINT, "mine", ["pool/2"])
    monkeypatch.undo()
    assert json.loads(file.read_text()) == document  # the old file is intact
    assert [p.name for p in file.parent.iterdir() if p.name.startswith(f".{file.name}")] == []  # no temporary left


def test_remove_drops_ids_and_empty_tags(store):
    tags.add(store, FINGERPRINT, tags.EXCLUDE, ["pool/1", "pool/2"])
    tags.add(store, FINGERPRINT, tags.SUSPECT, ["pool/5"])
    assert tags.remove(store, FINGERPRINT, tags.EXCLUDE, ["pool/1", "pool/9"]) == {
        tags.EXCLUDE: ["pool/2"], tags.SUSPECT: ["pool/5"]}
    assert tags.remove(store, FINGERPRINT, tags.EXCLUDE, ["pool/2"]) == {tags.SUSPECT: ["pool/5"]}
    assert tags.remove(store, FINGERPRINT, "never used", ["pool/5"]) == {tags.SUSPECT: ["pool/5"]}
    assert tags.load(store, FINGERPRINT) == {tags.SUSPECT: ["pool/5"]}


def test_concurrent_writers_lose_nothing(store):
    def tag(i):
        tags.add(store, FINGERPRINT, tags.EXCLUDE, [f"pool/{i}"])

    threads = [threading.Thread(target=tag, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tags.load(store, FINGERPRINT)[tags.EXCLUDE] == sorted(f"pool/{i}" for i in range(12))


def test_unknown_ids_are_refused_with_count_and_example(store):
    with pytest.raises(ValueError, match=r"^2 sample id\(s\) are not in this pool, e\.g\. 'elsewhere/1'"):
        tags.add(store, FINGERPRINT, tags.EXCLUDE, ["pool/1", "elsewhere/1", "elsewhere/2"], known=POOL)
    assert tags.load(store, FINGERPRINT) == {}  # nothing written


@pytest.mark.parametrize("tag", ["", "   ", "x" * 65, None])
def test_bad_tag_names_are_refused(store, tag):
    with pytest.raises(ValueError, match="tag"):
        tags.add(store, FINGERPRINT, tag, ["pool/1"])


def test_tag_names_up_to_64_characters_are_kept_stripped(store):
    assert tags.add(store, FINGERPRINT, "  " + "y" * 64 + " ", ["pool/1"]) == {"y" * 64: ["pool/1"]}


def test_a_corrupt_tag_file_is_one_line_store_error(store):
    file = tags.path(store, FINGERPRINT)
    file.parent.mkdir(parents=True)
    file.write_text("{not json")
    with pytest.raises(StoreError, match="unreadable tag file") as caught:
        tags.load(store, FINGERPRINT)
    assert "\n" not in str(caught.value)


def test_read_id_list_text_with_comments_and_blank_lines(tmp_path):
    file = tmp_path / "ids.txt"
    file.write_text("# left out after review\npool/3\n\n  pool/1  \npool/3\n# end\n")
    assert tags.read_id_list(file) == ["pool/1", "pool/3"]


def test_read_id_list_csv_with_an_id_column(tmp_path):
    file = tmp_path / "samples.csv"
    file.write_text("index,id,label,kept\n0,pool/0,1,1\n1,pool/1,0,0\n2,\"pool/2\",1,1\n")
    assert tags.read_id_list(file) == ["pool/0", "pool/1", "pool/2"]


@pytest.mark.parametrize("name, content, message", [
    ("missing.txt", None, "does not exist"),
    ("empty.txt", "# only a comment\n\n", "holds no sample id"),
    ("noid.csv", "index,label\n0,1\n", "no 'id' column"),
    ("binary.txt", b"\xff\xfe\x00\xd8", "cannot be read"),
    ("folder", "dir", "is a folder"),
])
def test_read_id_list_bad_files_are_one_line_errors(tmp_path, name, content, message):
    file = tmp_path / name
    if content == "dir":
        file.mkdir()
    elif isinstance(content, bytes):
        file.write_bytes(content)
    elif content is not None:
        file.write_text(content)
    with pytest.raises(ValueError, match=message) as caught:
        tags.read_id_list(file)
    assert "\n" not in str(caught.value)
