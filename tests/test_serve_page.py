"""`runsmon serve` times one page of the HPARAMS table on a real TensorBoard."""

from __future__ import annotations

import socket

import pytest
from tb import poll

from runsmon import RunsMonitor
from runsmon.serve import page_seconds, slow_page_note
from runsmon.sources import detect_source
from sample_projects.layouts import yaml_experiment


@pytest.mark.tb
def test_page_seconds_is_a_real_answer_time(tmp_path, tensorboard):
    runs = tmp_path / "runs"
    yaml_experiment.make(str(runs))
    monitor = RunsMonitor(str(tmp_path / "logdir"), detect_source(str(runs)), watch=False)
    monitor.run_once()
    tb = tensorboard(tmp_path / "logdir", load_fast=True)
    poll(tb.table, lambda t: len(t) == len(monitor.run_names), timeout=30, what="every run")
    seconds = page_seconds(tb.url)
    assert seconds is not None and 0 < seconds < 30
    # A page that fast is not worth a line; one over a second is, with its figures.
    assert slow_page_note(seconds, 3, 2) is None
    note = slow_page_note(seconds + 1.0, 3, 2)
    assert note is not None and "3 rows x 2 metric columns" in note


def test_page_seconds_is_none_without_an_answer():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: refused
        assert page_seconds(f"http://127.0.0.1:{s.getsockname()[1]}") is None
