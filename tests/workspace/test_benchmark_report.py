"""The benchmark's statistics report: paired tests and verdicts per strategy, the ceiling marked as an upper
bound wherever it appears, its lead per cycle, and the power calculation."""

import re

from mgral_workspace.reports import benchmark_markdown
from tests.core.test_benchmark_analysis import tidy_benchmark


def test_report_has_verdicts_headroom_and_power():
    text = benchmark_markdown(tidy_benchmark())
    for column in ("diff_vs_random", "ci_low", "ci_high", "wilcoxon_p", "p_improve", "mdd", "mdd_t", "verdict"):
        assert column in text.splitlines()[2], column
    verdicts = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(verdicts) == 3  # good, twin and the ceiling against random
    assert any(line.startswith("- good: **better than random, a real difference**") for line in verdicts)
    assert any(line.startswith("- twin: inside the noise") and "all 6 differences are 0" in line for line in verdicts)
    assert "### Headroom: oracle_best_of_n (ceiling) minus random, test map50_95 per cycle" in text
    power = text.split("### Power")[1]
    assert re.search(r"With 6 paired seeds .* detects with 80 % power \(alpha 0.05\) is 0\.\d{4}", power)
    assert re.search(r"Half the ceiling's lead .* this design (reaches|does not reach) it; \d+ paired seeds would",
                     power)


def test_the_ceiling_is_marked_in_every_table_and_line():
    text = benchmark_markdown(tidy_benchmark())
    mentions = [m.end() for m in re.finditer(r"oracle_best_of_n", text)]
    assert len(mentions) >= 4
    for end in mentions:  # each mention is followed by the mark, except where the mark's explanation names it
        assert text[end:end + len(" (ceiling)")] == " (ceiling)" or text[end:end + 2] == "`:"
    assert "it picks each batch by training with the oracle's true labels, an upper bound" in text


def test_report_without_a_ceiling_or_a_reference():
    tidy = tidy_benchmark()
    plain = benchmark_markdown(tidy[tidy["strategy"] != "oracle_best_of_n"])
    assert "ceiling" not in plain and "### Headroom" not in plain and "### Power" in plain
    assert "Half the ceiling" not in plain
    only = benchmark_markdown(tidy[tidy["strategy"] == "good"])  # no random: a table, no comparisons
    assert "### Verdicts" in only and not [line for line in only.splitlines() if line.startswith("- ")]


def test_report_checks_each_mgral_variant_against_the_best_baseline():
    names = {"good": "cdal", "twin": "mgral@agent.steps=3"}  # a baseline ahead of random, an MGRAL level with random
    tidy = tidy_benchmark()
    tidy = tidy.assign(strategy=tidy["strategy"].replace(names))
    section = benchmark_markdown(tidy).split("### Against the best baseline")[1]
    assert "The best baseline by mean AUC is cdal (" in section
    line = [x for x in section.splitlines() if x.startswith("- mgral@agent.steps=3: AUC ")]
    assert len(line) == 1 and "**not met**" in line[0]
    assert "paired against cdal: **worse than cdal, a real difference**" in line[0]
    assert "oracle_best_of_n" not in section  # the ceiling is never the best baseline
    plain = benchmark_markdown(tidy_benchmark())  # no MGRAL variant: no section
    assert "### Against the best baseline" not in plain
