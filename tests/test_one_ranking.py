"""One ranking: the leaderboard (CLI and JSON), the report, the review, the Python API and
the study's recorded order put a run's candidates in the same order."""

from __future__ import annotations

import json
import re

import hyarch
import hyarch.cli
from hyarch.ranking.leaderboard import leaderboard
from hyarch.ranking.rule import rank
from hyarch.report.html import build_report
from hyarch.report.summary import leaderboard as summary_leaderboard
from hyarch.review.terminal import TerminalReview
from tests.review_fixtures import demo_copy


def test_every_view_gives_the_same_order(tmp_path_factory, capsys):
    run = demo_copy(tmp_path_factory, "one-ranking")
    run.add_review({"candidate": "c0003", "verdict": "rejected", "note": "no"})
    order = [r.id for r in leaderboard(run)]
    assert len(order) == len(run.candidate_ids()) >= 4
    # the rejected candidate comes after every ranked one
    ranked = [r.id for r in leaderboard(run) if r.ranked]
    assert "c0003" not in ranked and order.index("c0003") >= len(ranked)

    assert hyarch.cli.main(["leaderboard", str(run.path), "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == order
    assert [r["id"] for r in hyarch.leaderboard(run.path)] == order
    assert [r.id for r in summary_leaderboard(run)] == order
    assert [r.id for r in TerminalReview(run, plots=False).rows()] == order
    # the report's leaderboard table lists the ranked candidates in the same order
    text = build_report(run).read_text()
    table = text.split("Leaderboard", 1)[1]
    shown = [c for c in re.findall(r"<b>(c\d{4})</b>", table) if c in ranked]
    assert shown[: len(ranked)] == ranked
    # and the rule is a function of the records alone
    results = {r.id: r.result for r in run.candidates()}
    again = [c for c, _ in rank(results, rejected={"c0003"})]
    assert again == order


def test_the_terminal_table_shows_score_and_tier(tmp_path_factory, capsys):
    run = demo_copy(tmp_path_factory, "one-ranking-table")
    assert hyarch.cli.main(["leaderboard", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "score" in out and "tier" in out and "one standard error" in out
