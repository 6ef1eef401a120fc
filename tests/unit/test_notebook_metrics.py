"""The metrics recorder of notebook 10: parsing, rates across a counter reset, quantiles."""

from __future__ import annotations

import math

import pytest

from taskmaster.notebook.metrics import MetricsRecorder, Scrape, parse, quantile

TEXT = """\
# HELP taskmaster_tasks_completed_total Tasks completed.
# TYPE taskmaster_tasks_completed_total counter
taskmaster_tasks_completed_total{command="demo-job"} 8.0
taskmaster_tasks_completed_total{command="sleep"} 2.0
taskmaster_tasks_completed_created{command="sleep"} 1.7e9
# TYPE taskmaster_task_queue_wait_seconds histogram
taskmaster_task_queue_wait_seconds_bucket{command="sleep",le="0.1"} 5.0
taskmaster_task_queue_wait_seconds_bucket{command="sleep",le="1.0"} 9.0
taskmaster_task_queue_wait_seconds_bucket{command="sleep",le="+Inf"} 10.0
taskmaster_task_queue_wait_seconds_count{command="sleep"} 10.0
taskmaster_task_queue_wait_seconds_sum{command="sleep"} 3.0
"""


def test_parse_and_read_a_scrape() -> None:
    samples = parse(TEXT)
    assert not [s for s in samples if s[0].endswith("_created")]
    scrape = Scrape(0.0, {"coordinator": samples})
    assert scrape.value("coordinator", "taskmaster_tasks_completed_total") == 10
    assert scrape.value("coordinator", "taskmaster_tasks_completed_total", command="sleep") == 2
    assert scrape.value("scheduler", "taskmaster_tasks_completed_total") == 0
    assert scrape.buckets("coordinator", "taskmaster_task_queue_wait_seconds") == {
        0.1: 5, 1.0: 9, math.inf: 10}


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile() -> None:
    buckets = {0.1: 5.0, 1.0: 9.0, math.inf: 10.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)  # the 5th of 10 is the 0.1 bound
    assert quantile(0.7, buckets) == pytest.approx(0.1 + 0.9 * (2 / 4))
    assert quantile(0.95, buckets) == 1.0  # in +Inf: the last finite bound
    assert math.isnan(quantile(0.5, {0.1: 0.0, math.inf: 0.0}))


def test_rate_treats_a_drop_as_a_counter_reset() -> None:
    recorder = MetricsRecorder({"coordinator": "http://unused"})
    for t, value in [(0.0, 10.0), (1.0, 14.0), (2.0, 2.0), (4.0, 6.0)]:
        recorder.scrapes.append(Scrape(t, {"coordinator": [
            ("taskmaster_tasks_completed_total", (), value)]}))
    rate = recorder.rate("coordinator", "taskmaster_tasks_completed_total")
    assert list(rate) == [4.0, 2.0, 2.0]  # the reset to 2 counts as an increase of 2
    assert list(rate.index) == [1.0, 2.0, 4.0]


def test_a_snapshot_draws_the_series_as_a_self_contained_svg() -> None:
    from taskmaster.notebook.snapshot import Panel, Series, Snapshot

    t = 1_800_000_000.0
    picture = Snapshot([Panel("Workers online", [
        Series("workers", "#7c3aed", [t, t + 1, t + 2], [3, 1, 5], step=True)])],
        caption="tasks: 5 total")
    svg = picture._repr_svg_()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "Workers online" in svg and "tasks: 5 total" in svg
    points = svg.split('<polyline points="')[1].split('"')[0].split()
    assert len(points) == 5  # 3 values, each step adds a corner
    assert repr(picture) == "Snapshot(Workers online)"  # what nbval compares


def test_the_charts_snapshot_their_own_series() -> None:
    from taskmaster.notebook.chart import ThroughputChart

    recorder = MetricsRecorder({"coordinator": "http://unused"})
    for t, value in [(0.0, 1.0), (1.0, 4.0)]:
        recorder.scrapes.append(Scrape(1_800_000_000.0 + t, {"coordinator": [
            ("taskmaster_workers_online", (), value)]}))
    from taskmaster.notebook.metrics import MetricsChart

    chart = MetricsChart(recorder, [("Churn", [
        ("workers online", lambda r: r.series("coordinator", "taskmaster_workers_online"))])])
    assert "<polyline" in chart.snapshot().svg() and "Churn" in chart.snapshot().svg()
    titles = ThroughputChart().snapshot().svg()
    assert all(t in titles for t in ("Tasks per second", "Queue depth", "Workers online"))
