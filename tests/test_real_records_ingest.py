"""Every real record in ../shared/ctgov/real and the corpus ingests: one version each, no
file refused, every trial in the database (the registry as it really is, not documents
we built)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from shared_data import CORPUS, REAL, real_documents, shared_path

from trialwatch.monitor.cli import cli
from trialwatch.monitor.sources.ctgov.parser import parse_study

ENV = {"TRIALWATCH_DB": None, "TRIALWATCH_LOG_FORMAT": None, "TRIALWATCH_LOG_LEVEL": None}


def real_trial_ids() -> set[str]:
    """The NCT IDs the real documents carry, read straight from the JSON."""
    return {doc["protocolSection"]["identificationModule"]["nctId"]
            for _, doc in real_documents()}


def test_every_real_document_parses() -> None:
    ids = [parse_study(doc).nct_id for _, doc in real_documents()]
    assert len(ids) > 1300
    assert set(ids) == real_trial_ids()


def test_every_real_record_and_the_corpus_ingest(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real = shared_path(*REAL)
    corpus = tmp_path / "corpus"
    with tarfile.open(shared_path(*CORPUS)) as tar:
        tar.extractall(corpus, filter="data")
    corpus_files = sorted(corpus.rglob("*.json"))
    assert len(corpus_files) == 1181
    monkeypatch.chdir(tmp_path)
    folders = [real / "studies", real / "pairs", real / "pages", corpus]
    result = CliRunner(env=ENV).invoke(
        cli, ["--db", f"sqlite:///{tmp_path / 'tw.db'}", "ingest", "--no-notify", "--json",
              *map(str, folders)])
    assert result.exit_code == 0, result.stderr[-2000:]
    assert "error" not in result.stderr
    out = orjson.loads(result.stdout)
    versions = {(r["nct_id"], r["version"]) for r in out["records"]}
    trials = {nct_id for nct_id, _ in versions}
    assert trials == real_trial_ids()  # 1,181 in the corpus, the rest in studies/pairs/pages
    assert all(version is not None for _, version in versions)
    listed = CliRunner(env=ENV).invoke(
        cli, ["--db", f"sqlite:///{tmp_path / 'tw.db'}", "list", "--json"])
    assert {row["nct_id"] for row in orjson.loads(listed.stdout)} == trials
