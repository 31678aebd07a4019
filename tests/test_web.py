"""The web dashboard over HTTP (Starlette's TestClient) on a database filled the real way.

``build_trial_database`` ingests the shipped seed, the constructed API v2 document and
modified copies of it through ``read_record_file`` + ``record_observation`` — the code
path of ``trialwatch ingest`` — so pages, feeds and API see what a user's database holds.
Other web tests (feeds, browser) import it from here.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient
from subscriptions import EveryEvent

from trialwatch.monitor.cycle.watchlist import add_query, add_trials
from trialwatch.monitor.sources.files import read_record_file
from trialwatch.monitor.versioning import Observation, record_observation
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database, open_database
from trialwatch.storage.models import OutboxEntry, QueryMatch
from trialwatch.storage.schema import ensure_schema

REPO_DIR = Path(__file__).resolve().parents[1]
SEED = REPO_DIR / "seeds" / "NCT07328581.txt"
CONSTRUCTED = REPO_DIR / "tests" / "fixtures" / "ctgov" / "constructed" / "NCT07328581.json"
NCT = "NCT07328581"
OTHER = "NCT05000001"
SCRIPT_TITLE = "BCMA-CD19 cCAR T <script>alert(1)</script> for Refractory Lupus"
ADDED_CRITERION = "Willing to use highly effective contraception during the study"


def _variant(document: dict[str, Any], posted: str, **edits: Any) -> dict[str, Any]:
    doc = copy.deepcopy(document)
    protocol = doc["protocolSection"]
    protocol["statusModule"]["lastUpdatePostDateStruct"] = {"date": posted, "type": "ACTUAL"}
    if "status" in edits:
        protocol["statusModule"]["overallStatus"] = edits["status"]
    if "enrollment" in edits:
        protocol["designModule"]["enrollmentInfo"]["count"] = edits["enrollment"]
    if "criterion" in edits:
        eligibility = protocol["eligibilityModule"]
        eligibility["eligibilityCriteria"] = eligibility["eligibilityCriteria"].replace(
            "\n\nExclusion Criteria:", f"\n7. {edits['criterion']}\n\nExclusion Criteria:")
    if "title" in edits:
        protocol["identificationModule"]["briefTitle"] = edits["title"]
    if "nct_id" in edits:
        protocol["identificationModule"]["nctId"] = edits["nct_id"]
    return doc


def build_trial_database(folder: Path) -> Database:
    """Two trials, the first with six versions: status, enrollment, criterion, <script> title."""
    folder.mkdir(parents=True, exist_ok=True)
    base = json.loads(CONSTRUCTED.read_text(encoding="utf-8"))
    recruiting = _variant(base, "2026-02-10", status="RECRUITING")
    bigger = _variant(recruiting, "2026-03-02", enrollment=40)
    criterion = _variant(bigger, "2026-04-01", criterion=ADDED_CRITERION)
    scripted = _variant(criterion, "2026-05-05", title=SCRIPT_TITLE)
    other = _variant(base, "2026-01-20", nct_id=OTHER, status="COMPLETED",
                     title="Another lupus trial")
    other_v2 = _variant(other, "2026-02-20", enrollment=25)
    files: list[Path] = [SEED, CONSTRUCTED]
    for name, doc in [("v3-recruiting", recruiting), ("v4-enrollment", bigger),
                      ("v5-criterion", criterion), ("v6-script-title", scripted),
                      ("other-v1", other), ("other-v2", other_v2)]:
        path = folder / f"{name}.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        files.append(path)
    db = open_database(f"sqlite:///{folder / 'trialwatch.db'}")
    ensure_schema(db)
    add_trials(db, [NCT])
    add_query(db, "lupus-cart", term="CAR-T", condition="lupus")
    subscriptions = [EveryEvent("team-mail", ("status", "results")), EveryEvent("ops-hook")]
    start = datetime.now(UTC) - timedelta(days=len(files))
    for i, path in enumerate(files):
        for document in read_record_file(path):
            with db.transaction() as session:
                record_observation(session, Observation(
                    record=document.record, raw=document.raw, raw_format=document.format,
                    source=f"file:{path.name}", fetched_at=start + timedelta(days=i, hours=1)),
                    subscriptions=subscriptions)
    with db.transaction() as session:
        trial = repo.trial(session, NCT)
        query = repo.saved_query(session, "lupus-cart")
        assert trial is not None and query is not None
        session.add(QueryMatch(query_id=query.id, trial_id=trial.id, matched_at=start))
        dead = session.query(OutboxEntry).filter_by(channel="ops-hook").first()
        assert dead is not None
        dead.status = "dead"
    return db


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    database = build_trial_database(tmp_path_factory.mktemp("web"))
    yield database
    database.close()


@pytest.fixture(scope="module")
def client(db: Database) -> TestClient:
    from trialwatch.monitor.web import create_app

    with TestClient(create_app(db)) as test_client:
        yield test_client


def cli_json(db: Database, *args: str) -> Any:
    """Run ``trialwatch --db URL ARGS`` and parse its JSON stdout."""
    from trialwatch.monitor.cli import cli

    result = CliRunner().invoke(cli, ["--db", db.engine.url.render_as_string(False), *args],
                                catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def assert_escaped(body: str) -> None:
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script" not in body.lower()


# --- pages ---------------------------------------------------------------------------------

def test_trial_list_shows_every_trial_with_high_severity_changes_first(client: TestClient):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    body = response.text
    assert body.index(NCT) < body.index(OTHER)
    assert f'href="https://clinicaltrials.gov/study/{NCT}"' in body
    assert "Recruiting" in body and "Phase 1, Phase 2" in body
    assert ">40<" in body  # enrollment of the latest version
    assert "Another lupus trial" in body and "Completed" in body
    assert_escaped(body)


@pytest.mark.parametrize(("params", "shown", "hidden"), [
    ("status=COMPLETED", OTHER, NCT),
    ("kind=eligibility", NCT, OTHER),
    ("query=lupus-cart", NCT, OTHER),
    ("q=another", OTHER, NCT),
    ("q=nct0732", NCT, OTHER),
])
def test_trial_list_filters_by_status_kind_query_and_text(client: TestClient, params: str,
                                                           shown: str, hidden: str):
    body = client.get(f"/?{params}").text
    assert f"/trials/{shown}" in body
    assert f"/trials/{hidden}" not in body


def test_trial_list_rejects_an_unknown_kind_with_a_clean_page(client: TestClient):
    response = client.get("/?kind=bogus")
    assert response.status_code == 400
    assert "unknown event kind" in response.text and "Traceback" not in response.text


def test_trial_page_has_timeline_versions_events_by_kind_and_default_diff(client: TestClient):
    response = client.get(f"/trials/{NCT}")
    assert response.status_code == 200
    body = response.text
    assert '<svg class="timeline"' in body
    assert "Not yet recruiting" in body and "Recruiting" in body  # status band labels
    assert "v1: 20 participants" in body and "v4: 40 participants" in body
    for number in range(1, 7):
        assert f"<td>v{number}" in body
    for kind in ("Status", "Enrollment", "Eligibility", "Description"):
        assert f'<span class="kind">{kind}</span>' in body
    assert "v5 → v6: 1 change" in body  # default comparison: the last two versions
    assert '<table class="diff">' in body
    assert_escaped(body)


def test_trial_diff_highlights_an_added_criterion_side_by_side(client: TestClient):
    body = client.get(f"/trials/{NCT}?from=4&to=5").text
    assert "v4 → v5: 1 change" in body
    added = re.findall(r'<div class="cell added">(.*?)</div>', body, re.S)
    assert any(ADDED_CRITERION in cell for cell in added)
    assert not re.findall(r'<div class="cell removed">', body)


def test_trial_diff_of_any_two_versions_old_to_new(client: TestClient):
    body = client.get(f"/trials/{NCT}?from=2&to=4").text
    assert "v2 → v4: 2 changes" in body
    assert "Recruitment status: Not yet recruiting → Recruiting" in body
    old, new = body.index("Not yet recruiting</div>"), body.index("Recruiting</div>")
    assert old < new  # old column before new


@pytest.mark.parametrize(("path", "status"), [
    ("/trials/NCT09999999", 404),
    ("/trials/not-an-id", 404),
    (f"/trials/{NCT}?from=9", 404),
    (f"/trials/{NCT}?from=5&to=3", 400),
    (f"/trials/{NCT}?from=abc", 400),
    ("/no/such/page", 404),
])
def test_bad_trial_urls_get_clean_error_pages(client: TestClient, path: str, status: int):
    response = client.get(path)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert '<section class="error">' in response.text and "Traceback" not in response.text


def test_changes_page_lists_recent_versions_and_outbox_health(client: TestClient):
    body = client.get("/changes").text
    assert f"{NCT} · v6" in body and f"{OTHER} · v2" in body
    assert body.index(f"{NCT} · v6") < body.index(f"{NCT} · v3")  # newest first
    outbox = body[body.index('<aside class="outbox">'):]
    assert "team-mail" in outbox and "ops-hook" in outbox
    assert '<tr class="dead"><td>ops-hook</td>' in outbox
    assert_escaped(body)


def test_changes_page_filters_by_kind(client: TestClient):
    body = client.get("/changes?kind=status").text
    assert f"{NCT} · v3" in body and f"{NCT} · v6" not in body


def test_static_stylesheet_is_served(client: TestClient):
    response = client.get("/static/style.css")
    assert response.status_code == 200 and "text/css" in response.headers["content-type"]


def test_pages_send_a_script_free_content_security_policy(client: TestClient):
    headers = client.get("/").headers
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "script-src" not in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"


# --- read-only -----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_only_get_and_head_are_allowed(client: TestClient, method: str):
    for path in ("/", f"/trials/{NCT}", "/api/trials", "/feeds/changes.atom"):
        response = client.request(method, path)
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD"


def test_head_requests_are_answered(client: TestClient):
    assert client.head("/").status_code == 200
    assert client.head("/feeds/changes.atom").status_code == 200


# --- JSON API: the CLI's shapes ------------------------------------------------------------

def test_api_trials_equals_list_json(client: TestClient, db: Database):
    assert client.get("/api/trials").json() == cli_json(db, "list", "--json")


def test_api_history_equals_history_json(client: TestClient, db: Database):
    api = client.get(f"/api/trials/{NCT}/history").json()
    assert api == cli_json(db, "history", NCT, "--json")
    assert [v["version"] for v in api["versions"]] == [1, 2, 3, 4, 5, 6]
    filtered = client.get(f"/api/trials/{NCT}/history?kind=status").json()
    assert filtered == cli_json(db, "history", NCT, "--kind", "status", "--json")


@pytest.mark.parametrize("query", ["", "?from=2&to=5", "?from=3"])
def test_api_diff_equals_diff_json(client: TestClient, db: Database, query: str):
    args = {"": [], "?from=2&to=5": ["--from", "2", "--to", "5"], "?from=3": ["--from", "3"]}
    api = client.get(f"/api/trials/{NCT}/diff{query}").json()
    assert api == cli_json(db, "diff", NCT, *args[query], "--json")
    assert api["events"]


def test_api_status_reports_outbox_per_channel(client: TestClient):
    status = client.get("/api/status").json()
    assert status["watched"] == 1 and status["queries"] == 1
    assert status["outbox"]["ops-hook"]["dead"] == 1
    assert status["outbox"]["team-mail"]["pending"] >= 1
    assert set(status) >= {"last_cycle", "outbox", "schema_version"}


def test_api_status_says_when_the_next_cycle_is_due_and_lists_configured_channels(
        db: Database):
    from trialwatch.monitor.web import create_app

    asked: list[datetime | None] = []

    def next_cycle(last_started: datetime | None) -> datetime:
        asked.append(last_started)
        return datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)

    web = create_app(db, next_cycle=next_cycle, channels=["quiet-channel"])
    with TestClient(web) as local:
        status = local.get("/api/status").json()
    assert status["next_cycle"] == "2031-01-02T03:04:05Z"
    assert asked == [None]  # the database holds no cycle yet
    assert status["outbox"]["quiet-channel"] == {"pending": 0, "delivered": 0, "dead": 0}
    assert status["outbox"]["ops-hook"]["dead"] == 1


@pytest.mark.parametrize(("path", "status"), [
    ("/api/trials/NCT09999999/history", 404),
    (f"/api/trials/{NCT}/diff?from=7", 404),
    (f"/api/trials/{NCT}/diff?from=x", 400),
    (f"/api/trials/{NCT}/history?kind=bogus", 400),
    ("/api/nothing", 404),
])
def test_api_errors_are_json(client: TestClient, path: str, status: int):
    response = client.get(path)
    assert response.status_code == status
    assert response.json()["error"]


# --- access token --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def guarded(db: Database) -> TestClient:
    from trialwatch.monitor.web import create_app

    with TestClient(create_app(db, token="s3cret-token")) as test_client:
        yield test_client


def test_token_is_required_when_configured(guarded: TestClient):
    for path in ("/", f"/trials/{NCT}", "/feeds/changes.atom", "/api/trials"):
        response = guarded.get(path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert guarded.get("/api/trials").json()["error"]
    wrong = guarded.get("/", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_token_accepted_as_bearer_header_or_query_then_cookie(guarded: TestClient):
    ok = guarded.get("/api/trials", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200
    guarded.cookies.clear()
    first = guarded.get("/?token=s3cret-token")
    assert first.status_code == 200
    assert "HttpOnly" in first.headers["set-cookie"]
    assert "SameSite=Strict" in first.headers["set-cookie"]
    assert guarded.get(f"/trials/{NCT}").status_code == 200  # links work with the cookie
    guarded.cookies.clear()
    assert guarded.get(f"/trials/{NCT}").status_code == 401


def test_stylesheet_needs_no_token(guarded: TestClient):
    guarded.cookies.clear()
    assert guarded.get("/static/style.css").status_code == 200


# --- trialwatch serve ----------------------------------------------------------------------

@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("192.168.1.10", False), ("example.org", False), ("::", False),
])
def test_loopback_hosts(host: str, loopback: bool):
    from trialwatch.monitor.cli.web import is_loopback

    assert is_loopback(host) is loopback


def test_serve_refuses_a_public_host_without_a_token(db: Database,
                                                     monkeypatch: pytest.MonkeyPatch):
    import uvicorn

    from trialwatch.monitor.cli import cli

    monkeypatch.delenv("TRIALWATCH_WEB_TOKEN", raising=False)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not start"))
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", db.engine.url.render_as_string(False), "serve",
                                  "--host", "0.0.0.0"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs an access token" in lines[0]


def test_serve_runs_uvicorn_with_the_token_from_the_environment(
        db: Database, monkeypatch: pytest.MonkeyPatch):
    import uvicorn

    from trialwatch.monitor.cli import cli

    started: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    monkeypatch.setenv("TRIALWATCH_WEB_TOKEN", "from-env-0123456789")
    result = CliRunner().invoke(cli, ["--db", db.engine.url.render_as_string(False), "serve",
                                      "--host", "0.0.0.0", "--port", "8123"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (started["host"], started["port"]) == ("0.0.0.0", 8123)
    assert started["access_log"] is False
    with TestClient(started["app"]) as guarded:
        assert guarded.get("/").status_code == 401
        bearer = {"Authorization": "Bearer from-env-0123456789"}
        assert guarded.get("/", headers=bearer).status_code == 200
