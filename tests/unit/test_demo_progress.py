"""The demo's progress bar: redrawn on a terminal, a single final line elsewhere."""

from __future__ import annotations

import io

from notefly.demo import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_only_the_final_line():
    out = io.StringIO()
    show = progress_bar(out, width=10)
    for done in (0, 3, 7):
        show(done, 7)
    assert out.getvalue() == "\r  deliveries [##########] 7/7\n"


def test_a_terminal_sees_the_bar_fill():
    out = Terminal()
    show = progress_bar(out, width=10)
    show(2, 8)
    show(8, 8)
    assert out.getvalue() == ("\r  deliveries [##........] 2/8\r  deliveries [##########] 8/8\n")
