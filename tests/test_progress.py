"""Progress in a log file: plain lines, no carriage returns; a bar only on a terminal."""

import io

from segbench.infra.progress import LogProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_plain_lines_and_the_last_state():
    out = io.StringIO()
    bar = progress_bar(range(5), desc="train run", initial=0, file=out, every_s=0.0)
    assert isinstance(bar, LogProgress)
    for i in bar:
        bar.set_postfix(loss=f"{i:.2f}")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(",")[0] for line in lines] == [f"train run: {k}/5 ({20 * k}%)" for k in (1, 2, 3, 4, 5, 5)]
    assert lines[-1].endswith("loss=4.00")


def test_lines_are_rate_limited_but_the_last_one_is_always_written():
    out = io.StringIO()
    with progress_bar(total=1000, desc="HHA", unit="frame", file=out, every_s=3600.0) as bar:
        for _ in range(1000):
            bar.update(1)
    assert out.getvalue().splitlines()[0].startswith("HHA: 1000/1000 (100%)")
    assert len(out.getvalue().splitlines()) == 1


def test_a_resumed_count_and_byte_units():
    out = io.StringIO()
    with progress_bar(total=2_500_000, initial=1_000_000, unit="B", unit_scale=True, desc="get", file=out) as bar:
        bar.update(500_000)
    assert out.getvalue().startswith("get: 1.5M/2.5M (60%)")


def test_disable_writes_nothing_and_a_terminal_gets_tqdm():
    out = io.StringIO()
    for _ in progress_bar(range(3), desc="x", disable=True, file=out, every_s=0.0):
        pass
    assert out.getvalue() == ""
    term = Terminal()
    bar = progress_bar(range(3), desc="x", file=term)
    assert type(bar).__name__ == "tqdm"
    list(bar)
    assert "\r" in term.getvalue()
