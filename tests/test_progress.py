"""Progress reporting: a rich bar with rate and ETA on a terminal, plain log lines otherwise."""

from __future__ import annotations

import io

from rich.console import Console

from alexnet_cli.cli import common
from alexnet_cli.progress import ConsoleReporter


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, color_system=None), out


def test_log_lines_when_not_a_terminal_carry_progress_rate_and_info():
    console, out = _console(terminal=False)
    reporter = ConsoleReporter(console, log_every=0.0)
    assert not reporter.interactive
    with reporter.task("epoch 1/2", total=4, unit="batch") as task:
        for _ in range(4):
            task.advance(1, loss=2.5)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("epoch 1/2: 4/4 batch (")
    assert "batch/s)" in lines[-1] and "loss=2.5" in lines[-1]
    assert "\x1b[" not in out.getvalue()   # no control codes in a log file


def test_log_lines_are_spaced_but_the_last_one_always_comes():
    console, out = _console(terminal=False)
    with ConsoleReporter(console, log_every=3600.0).task("features", total=10, unit="image") as task:
        for _ in range(10):
            task.advance(1)
    lines = out.getvalue().strip().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith("features: 10/10 image")


def test_bar_on_a_terminal_shows_rate_and_eta():
    console, out = _console(terminal=True)
    reporter = ConsoleReporter(console)
    assert reporter.interactive
    with reporter.task("epoch 1/1", total=3, unit="batch") as task:
        for _ in range(3):
            task.advance(1, loss=1.0)
    text = out.getvalue()
    assert "epoch 1/1" in text and "3/3" in text and "eta" in text and "batch/s" in text and "loss 1" in text


def test_a_resumed_task_shows_its_position_but_rates_only_its_own_work(monkeypatch):
    """A run resumed at batch 998 of 1000 shows 1000/1000 at the end, and a rate of the 2
    batches it did (the audit saw "6/6 batch (936037.1 batch/s)": the done batches as work)."""
    from alexnet_cli import progress

    clock = iter([0.0, 1.0, 2.0])                       # the task starts at 0, each batch takes 1 s
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    console, out = _console(terminal=False)
    with ConsoleReporter(console, log_every=0.0).task("epoch 2/2", total=1000, unit="batch", done=998) as task:
        task.advance(1)
        task.advance(1)
    assert out.getvalue().strip().splitlines()[-1] == "epoch 2/2: 1000/1000 batch (1.0 batch/s)"
    ticks = iter(range(10**6))                          # the bar's clock: 1 s a reading
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None, get_time=lambda: next(ticks))
    with ConsoleReporter(console).task("epoch 2/2", total=1000, unit="batch", done=998) as task:
        task.advance(1)
        task.advance(1)
    last = out.getvalue().split("\r")[-1]
    assert "1000/1000" in last and float(last.split(" batch/s")[0].split()[-1]) < 2   # not 1,000 over a few s


def test_cli_draws_no_bar_when_stdout_is_redirected(monkeypatch):
    """docs/public-surface.md: quiet-but-logging when stdout is not a terminal, even if stderr still is."""
    for out_tty, err_tty, bar in ((True, True, True), (False, True, False), (True, False, False)):
        monkeypatch.setattr(common, "console", Console(file=io.StringIO(), force_terminal=out_tty))
        monkeypatch.setattr(common, "err_console", Console(file=io.StringIO(), force_terminal=err_tty))
        assert common.reporter().interactive is bar, (out_tty, err_tty)


def test_user_text_is_never_markup():
    """F4: "[/x]" in a description or a log line raised MarkupError; "[red]" vanished."""
    for terminal in (False, True):
        console, out = _console(terminal)
        reporter = ConsoleReporter(console, log_every=0.0)
        with reporter.task("prep a[/x] [red]b", total=1, unit="image") as task:
            task.advance(1, path="c[/y]")
        reporter.log("skipped d[/z] [bold]e")
        text = out.getvalue()
        assert "prep a[/x] [red]b" in text and "skipped d[/z] [bold]e" in text, text
        assert terminal or "c[/y]" in text


def test_the_clis_consoles_print_user_text_as_it_is(monkeypatch):
    assert common.console._markup is False and common.err_console._markup is False


def test_counts_read_as_english():
    from alexnet_cli.progress import plural

    assert [plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert plural(1_281_167, "image") == "1,281,167 images" and plural(1, "class", "classes") == "1 class"
    assert plural(4, "class", "classes") == "4 classes"
