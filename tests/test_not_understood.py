"""A document with fields trialwatch does not understand: one log line naming the trial and
the fields, and the version is stored all the same (its raw document keeps them)."""

from __future__ import annotations

import pickle
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from docmaker import SEED_JSON, module, study, write

from trialwatch.monitor.cli import cli
from trialwatch.monitor.sources.ctgov.parser import parse_study

ENV = {"TRIALWATCH_DB": None, "TRIALWATCH_LOG_FORMAT": None, "TRIALWATCH_LOG_LEVEL": None}


def with_news() -> dict:
    doc = study(SEED_JSON)
    module(doc, "futureRegistryModule")["x"] = 1
    doc["annotationSection"] = {"annotationModule": {"unpostedAnnotation": {
        "unpostedEvents": [{"type": "WITHDRAW_REQUEST", "date": "2026-03-01"}]}}}
    return doc


def test_parser_names_what_it_does_not_understand() -> None:
    record = parse_study(with_news())
    assert record.unread == ("annotationSection.unpostedEvents.type=WITHDRAW_REQUEST",
                             "protocolSection.futureRegistryModule")
    assert parse_study(study(SEED_JSON)).unread == ()


def test_what_is_not_understood_is_not_part_of_the_content() -> None:
    plain = study(SEED_JSON)
    plain["annotationSection"] = with_news()["annotationSection"]
    assert parse_study(with_news()).content_hash == parse_study(plain).content_hash


def test_what_is_not_understood_survives_the_fetch_worker() -> None:
    record = parse_study(with_news())
    assert pickle.loads(pickle.dumps(record)).unread == record.unread


def test_ingest_stores_the_version_and_logs_one_line(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(with_news(), tmp_path / "news.json")
    result = CliRunner(env=ENV).invoke(cli, [
        "--db", f"sqlite:///{tmp_path / 'tw.db'}", "--log-format", "json",
        "ingest", "--no-notify", "--json", str(path)])
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["records"] == [
        {"nct_id": "NCT07328581", "version": 1, "changed": True}]
    lines = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    noted = [line for line in lines if line.get("event") == "record.not_understood"]
    assert len(noted) == 1
    assert noted[0]["nct_id"] == "NCT07328581"
    assert noted[0]["fields"] == ("annotationSection.unpostedEvents.type=WITHDRAW_REQUEST, "
                                  "protocolSection.futureRegistryModule")
