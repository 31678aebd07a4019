"""Reading record files and folders: formats, page expansion and every kind of bad input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson
import pytest
from shared_data import CONSTRUCTED, CTGOV

from trialwatch.monitor.record import ParseError
from trialwatch.monitor.sources import files
from trialwatch.monitor.sources.files import ParsedDocument, iter_record_paths, read_record_file

CTGOV_DIR = CTGOV  # = the ctgov_dir fixture (../shared/ctgov)
JSON_FILES = sorted(CTGOV_DIR.glob("*.json"))


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: p.name)
def test_every_sample_json_file_reads(path: Path) -> None:
    documents = read_record_file(path)
    assert documents
    assert all(d.format == "ctgov-json" for d in documents)
    if path.name.startswith("NCT"):
        (document,) = documents
        assert document.record.nct_id == path.name.split(".")[0]
        assert document.raw == path.read_bytes()
        assert document.origin == str(path)


def test_json_study_gives_one_document(ctgov_dir: Path) -> None:
    (document,) = read_record_file(ctgov_dir / "NCT00184067.json")
    assert isinstance(document, ParsedDocument)
    assert document.record.overall_status == "TERMINATED"


def test_json_page_gives_one_document_per_study(ctgov_dir: Path) -> None:
    path = ctgov_dir / "page_example.json"
    documents = read_record_file(path)
    assert [d.record.nct_id for d in documents] == [
        "NCT02710084", "NCT05105685", "NCT01525901", "NCT03493607", "NCT07119606"]
    assert documents[1].origin == f"{path}#studies[1]"
    assert orjson.loads(documents[0].raw)["protocolSection"]["identificationModule"][
        "nctId"] == "NCT02710084"


def test_full_json_page_studies_match_single_files(ctgov_dir: Path) -> None:
    documents = read_record_file(ctgov_dir / "page_example_full.json")
    for document in documents:
        (single,) = read_record_file(ctgov_dir / f"{document.record.nct_id}.json")
        assert document.record.content_hash == single.record.content_hash


def test_json_list_of_studies_gives_one_document_per_study(
        tmp_path: Path, ctgov_dir: Path) -> None:
    page = orjson.loads((ctgov_dir / "page_example_full.json").read_bytes())
    path = tmp_path / "list.json"
    path.write_bytes(orjson.dumps(page["studies"]))
    assert [d.record.nct_id for d in read_record_file(path)] == ["NCT00184067", "NCT03934567"]


def test_empty_study_page_gives_no_documents(tmp_path: Path) -> None:
    path = tmp_path / "page.json"
    path.write_text('{"studies": [], "totalCount": 0}')
    assert read_record_file(path) == []


def test_text_page_gives_one_document(seed_path: Path) -> None:
    (document,) = read_record_file(seed_path)
    assert document.format == "text-page"
    assert document.record.nct_id == "NCT07328581"
    assert document.raw == seed_path.read_bytes()


def test_json_detected_by_first_character_not_extension(tmp_path: Path, ctgov_dir: Path) -> None:
    path = tmp_path / "study.txt"
    path.write_bytes(b"\n   " + (ctgov_dir / "NCT03934567.json").read_bytes())
    (document,) = read_record_file(path)
    assert document.format == "ctgov-json"


def test_utf8_bom_is_accepted(tmp_path: Path, seed_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + seed_path.read_bytes())
    assert read_record_file(path)[0].record.nct_id == "NCT07328581"


# --------------------------------------------------------------------------- bad input


def expect_error(path: Path, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        read_record_file(path)


def test_missing_path_is_reported(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.json", "does not exist")


def test_directory_is_reported(tmp_path: Path) -> None:
    expect_error(tmp_path, "is a directory")


def test_empty_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_bytes(b"")
    expect_error(path, "empty file")


def test_whitespace_only_file_is_reported_empty(tmp_path: Path) -> None:
    path = tmp_path / "blank.txt"
    path.write_bytes(b" \n\t\n")
    expect_error(path, "empty file")


def test_binary_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "image.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    expect_error(path, "binary file")


def test_invalid_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("Trial caf\xe9\nNCT ID: NCT00000001\n".encode("latin-1"))
    expect_error(path, "invalid UTF-8 at byte 9")


def test_file_over_50_mb_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with path.open("wb") as handle:
        handle.truncate(files.MAX_FILE_BYTES + 1)  # sparse: no 50 MB written to disk
    expect_error(path, "larger than 50 MB")


def test_truncated_json_is_reported_with_position(tmp_path: Path, ctgov_dir: Path) -> None:
    path = tmp_path / "truncated.json"
    path.write_bytes((ctgov_dir / "NCT03934567.json").read_bytes()[:500])
    expect_error(path, r"invalid JSON: .* line \d+ column \d+")


def test_malformed_json_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"protocolSection" 1}')
    expect_error(path, r"invalid JSON: .*\(char 19\)")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"error": "not found"}', "not a ClinicalTrials.gov study or study page"),
        ("[1, 2]", r"studies\[0\]: .*expected a JSON object"),
        ('{"studies": "x"}', "expected an array"),
        ('{"protocolSection": {"identificationModule": {}}}', "no NCT ID"),
        ('{"studies": [{"protocolSection": {}}]}', r"studies\[0\]: study has no NCT ID"),
    ],
)
def test_json_that_is_not_a_study_is_reported(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "other.json"
    path.write_text(content)
    expect_error(path, reason)


def test_html_error_page_is_reported_as_page_without_nct_id(tmp_path: Path) -> None:
    path = tmp_path / "error.txt"
    path.write_text("<html><body>502 Bad Gateway</body></html>")
    expect_error(path, "no \"NCT ID")


def test_text_page_without_nct_id_is_reported(tmp_path: Path, seed_path: Path) -> None:
    path = tmp_path / "page.txt"
    path.write_text(seed_path.read_text().replace("NCT ID: NCT07328581\n", ""))
    expect_error(path, "no \"NCT ID")


def test_nct_id_of_wrong_shape_is_reported(tmp_path: Path, seed_path: Path) -> None:
    path = tmp_path / "page.txt"
    path.write_text(seed_path.read_text().replace("NCT07328581", "NCT7328581", 1))
    expect_error(path, "invalid NCT ID 'NCT7328581'")


def test_json_nct_id_of_wrong_shape_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "study.json"
    path.write_text('{"protocolSection": {"identificationModule": {"nctId": "NCT-1"}}}')
    expect_error(path, "invalid NCT ID 'NCT-1'")


# --------------------------------------------------------------------------- folders


def test_folder_expands_to_sorted_record_files_recursively(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("b/2.json", "a/deep/3.txt", "a/1.JSON", "z.txt", "notes.md", "data.csv"):
        (tmp_path / name).write_text("x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_record_paths([tmp_path])]
    assert found == ["a/1.JSON", "a/deep/3.txt", "b/2.json", "z.txt"]


def test_folder_expansion_skips_hidden_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.json").write_text("x")
    (tmp_path / ".hidden.json").write_text("x")
    (tmp_path / "shown.json").write_text("x")
    assert list(iter_record_paths([tmp_path])) == [tmp_path / "shown.json"]


def test_files_are_yielded_as_given_and_missing_ones_too(tmp_path: Path) -> None:
    explicit = tmp_path / "record.dat"
    explicit.write_text("x")
    missing = tmp_path / "missing.json"
    assert list(iter_record_paths([explicit, str(missing)])) == [explicit, missing]


def test_each_file_is_yielded_once(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text("x")
    assert list(iter_record_paths([tmp_path, path, tmp_path])) == [path]


def test_sample_ctgov_folder_reads_completely(ctgov_dir: Path, tmp_path: Path) -> None:
    # the shared folder's own documents and SOURCES.md, the project's constructed one nested
    folder = tmp_path / "ctgov"
    (folder / "constructed").mkdir(parents=True)
    for path in [*JSON_FILES, ctgov_dir / "SOURCES.md"]:
        shutil.copy(path, folder / path.name)
    shutil.copy(CONSTRUCTED / "NCT07328581.json", folder / "constructed")
    paths = list(iter_record_paths([folder]))
    assert folder / "constructed" / "NCT07328581.json" in paths
    assert not any(p.suffix == ".md" for p in paths)
    records = [d.record for p in paths for d in read_record_file(p)]
    study_files = [p for p in JSON_FILES if p.name.startswith("NCT")]
    # single studies + constructed seed version + 5 and 2 studies of the two pages
    assert len(records) == len(study_files) + 1 + 5 + 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "locked.json"
    path.write_text("{}")
    path.chmod(0)
    expect_error(path, "cannot read file")
