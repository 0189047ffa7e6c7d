"""The README stays in step with the command line.

The Commands table has one row per subcommand of ``yuzu-onnx --help`` (a new subcommand
without a row fails here), and the benchmark, a script of the source checkout rather than
a command, is documented in its own section.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from yuzu_onnx.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_section(title: str) -> str:
    """The text of the README's ``## title`` section, up to the next ``## `` heading."""
    text = README.read_text("utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def readme_commands() -> list[str]:
    """The subcommands named in the first column of the README's Commands table, in order."""
    commands = []
    for line in readme_section("Commands").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if not cells or cells[0] in ("command", "") or set(cells[0]) <= set("-: "):
            continue
        first = re.match(r"`([a-z][a-z_-]*)", cells[0])
        assert first, f"a Commands row that does not start with `command`: {line!r}"
        commands.append(first.group(1))
    return commands


def parser_commands(parser: argparse.ArgumentParser) -> list[str]:
    """The subcommands of ``parser`` in the order ``--help`` lists them."""
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


def missing_and_extra(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """``(subcommands without a README row, README rows that are no subcommand)``."""
    table, commands = readme_commands(), parser_commands(parser)
    return set(commands) - set(table), set(table) - set(commands)


def test_commands_table_lists_every_subcommand_once():
    table = readme_commands()
    assert len(table) == len(set(table)), f"a command has two rows: {table}"
    missing, extra = missing_and_extra(build_parser())
    assert not missing, f"subcommands of yuzu-onnx --help without a row in README's Commands table: {missing}"
    assert not extra, f"rows of README's Commands table that are not subcommands: {extra}"


def test_commands_table_is_in_help_order():
    assert readme_commands() == parser_commands(build_parser())


def test_a_new_subcommand_without_a_row_is_caught():
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    action.add_parser("brand-new", help="not in the README")
    missing, _ = missing_and_extra(parser)
    assert missing == {"brand-new"}


def test_help_lists_the_same_commands(cli):
    res = cli("--help")
    assert res.rc == 0
    listed = re.search(r"\{([a-z_,-]+)\}", res.out)
    if listed:  # argparse prints {a,b,...} unless the subparsers have a metavar
        assert listed.group(1).split(",") == readme_commands()
    for command in readme_commands():
        assert re.search(rf"^\s+{re.escape(command)}\s", res.out, flags=re.M), command


def test_benchmarks_are_a_script_documented_in_their_own_section():
    assert "bench" not in parser_commands(build_parser())
    assert "python tools/bench.py" in readme_section("Benchmarks")
    assert "[Benchmarks](#benchmarks)" in readme_section("Commands")
