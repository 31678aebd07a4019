"""Markdown bodies for chat services (``render_markdown``) and shortening them to a length
limit (``shorten``): pure functions, no Apprise needed."""

from __future__ import annotations

from alert_samples import STATUS_EVENT, sample_alert

from trialwatch.notifiers.base import Alert, DigestTrial
from trialwatch.notifiers.render import (
    Block,
    escape_markdown,
    join_blocks,
    message_blocks,
    render_markdown,
    shorten,
)

DASHBOARD = "https://trials.example.org/trials/NCT07328581?from=1&to=2"


def changes(count: int) -> list[Block]:
    return [Block(f"- change {i}", change=True, link=DASHBOARD) for i in range(count)]


def test_markdown_significant_characters_are_escaped():
    assert escape_markdown("a*b_c [d](e) <f> `g` #h |i ~j &k !l \\m") == (
        r"a\*b\_c \[d\](e) \<f\> \`g\` \#h \|i \~j \&k \!l \\m")


def test_escaping_also_cleans_control_characters():
    assert escape_markdown("two\nlines\x1b[31m") == r"two lines [31m".replace("[", "\\[")


def test_link_destinations_cannot_break_out_of_the_link():
    alert = sample_alert(dashboard_url="https://trials.example.org/trials/x) [evil](http://e")
    body = render_markdown(alert)
    assert "(https://trials.example.org/trials/x%29%20[evil]%28http://e)" in body


def test_a_trial_alert_shows_title_version_changes_and_both_links():
    body = render_markdown(sample_alert(dashboard_url=DASHBOARD))
    assert body == (
        "**NCT07328581 — CAR-T Cell Therapy for Refractory Lupus**\n\n"
        "Version 2\n\n"
        "- **high** · Recruitment status: Not yet recruiting → Recruiting\n\n"
        "[View the trial on ClinicalTrials.gov](https://clinicaltrials.gov/study/NCT07328581)"
        f" · [See the change on the dashboard]({DASHBOARD})\n")


def test_a_digest_lists_each_trial_with_its_changes_and_links():
    trials = [DigestTrial("NCT07328581", "Lupus *CAR-T*", [STATUS_EVENT], DASHBOARD),
              DigestTrial("NCT01234567", None, [STATUS_EVENT, STATUS_EVENT])]
    alert = Alert(id="d1", channel="chat", nct_id="", title=None, version=0,
                  events=[STATUS_EVENT] * 3, kind="digest", trials=trials,
                  period=("2026-12-02T08:00:00Z", "2026-12-03T08:00:00Z"))
    body = render_markdown(alert)
    assert body.startswith("**Digest: 3 changes in 2 trials**\n\n"
                           "From 2026-12-02T08:00:00Z to 2026-12-03T08:00:00Z\n\n"
                           r"**NCT07328581 — Lupus \*CAR-T\***")
    assert "**NCT01234567 — (untitled trial)**" in body
    assert body.count("- **high** · Recruitment status") == 3
    assert "(https://clinicaltrials.gov/study/NCT01234567)" in body


def test_plain_text_blocks_have_no_markup():
    text = join_blocks(message_blocks(sample_alert(title="A *b*"), markdown=False))
    assert "NCT07328581 — A *b*" in text and "**" not in text
    assert "View the trial on ClinicalTrials.gov: https://clinicaltrials.gov/study/" in text


def test_a_message_that_fits_is_left_whole():
    blocks = [Block("**title**"), *changes(3)]
    assert shorten(blocks, 1000) == join_blocks(blocks)


def test_a_long_message_is_cut_at_a_block_boundary_and_counts_what_was_cut():
    blocks = [Block("**title**", link=DASHBOARD), *changes(50)]
    text = shorten(blocks, 300)
    assert len(text) <= 300
    kept = [line for line in text.splitlines() if line.startswith("- change")]
    assert kept == [f"- change {i}" for i in range(len(kept))]  # whole lines, in order
    assert text.endswith(f"\n\n… {50 - len(kept)} more changes: {DASHBOARD}\n")


def test_the_more_link_is_where_the_cut_changes_can_be_read():
    first = [Block(f"- a{i}", change=True, link="https://a.example") for i in range(3)]
    second = [Block(f"- b{i}", change=True, link="https://b.example") for i in range(30)]
    text = shorten([*first, *second], 60)
    assert text.endswith("more changes: https://b.example\n")


def test_one_cut_change_is_singular():
    blocks = [Block("**title**"), *(Block("- " + "x" * 200, change=True, link=DASHBOARD)
                                     for _ in range(2))]
    limit = len(join_blocks(blocks)) - 1
    assert shorten(blocks, limit).endswith(f"… 1 more change: {DASHBOARD}\n")


def test_a_limit_smaller_than_any_block_still_says_what_is_missing():
    text = shorten([Block("x" * 500, link=DASHBOARD), *changes(5)], 80)
    assert text == f"… 5 more changes: {DASHBOARD}\n"


def test_a_limit_too_small_for_the_note_sends_the_link_whole():
    assert shorten([Block("x" * 500, link=DASHBOARD), *changes(5)], 70) == DASHBOARD
