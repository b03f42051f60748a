"""The CLI's lazy console: plain lines are written as rich would write them, without rich."""

from __future__ import annotations

import pytest

from topoctl.cli import _Console

PLAIN = ["No changes. The live state matches the file.", "a6:ab:75:00:00:01 :smile: 10.0.0.1/24 -> up", ""]


@pytest.mark.parametrize("line", PLAIN)
def test_a_plain_line_is_written_exactly_as_rich_writes_it(capsys, line):
    lazy = _Console()
    lazy.print(line)
    assert lazy._console is None  # rich was not needed
    without_rich = capsys.readouterr().out
    _Console().console.print(line)
    assert without_rich == capsys.readouterr().out == line + "\n"


def test_markup_and_stderr_go_through_rich(capsys):
    lazy = _Console(stderr=True)
    lazy.print("[bold]x[/bold] \\[y]")
    assert lazy._console is not None
    captured = capsys.readouterr()
    assert captured.err == "x [y]\n" and captured.out == ""


def test_a_line_with_a_tab_goes_through_rich(capsys):
    lazy = _Console()
    lazy.print("a\tb")
    assert lazy._console is not None
    assert capsys.readouterr().out == "a       b\n"  # rich expands tabs


def test_a_line_with_a_control_character_goes_through_rich(capsys):
    lazy = _Console()
    lazy.print("bell\a here")
    assert lazy._console is not None
    assert capsys.readouterr().out == "bell here\n"  # rich strips it
