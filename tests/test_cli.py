"""The `dermsynth` command grouped the way the pipeline is (issue 29, item 2): every verb in its stage's group,
`--version`, every option with help (and its default shown), the flat names of earlier releases still running
with one line naming the new verb, and the workflow's rules calling only the new names."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dermsynth import __version__
from dermsynth.cli import GROUPS, build_parser, main, renamed
from dermsynth.verbs import RENAMED

REPO = Path(__file__).resolve().parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _verbs() -> dict[str, argparse.ArgumentParser]:
    """Full verb name ("gan train", "review") → its parser."""
    verbs = {}
    for name, parser in _subparsers(build_parser()).items():
        inner = _subparsers(parser)
        verbs.update({f"{name} {verb}": p for verb, p in inner.items()} if inner else {name: parser})
    return verbs


VERBS = _verbs()


def test_every_stage_is_a_group_and_the_few_that_stand_alone_are_verbs():
    groups = {name.split()[0] for name in VERBS if " " in name}
    assert groups == set(GROUPS)
    assert {name for name in VERBS if " " not in name} == {"check-config", "fetch-weights", "review", "bench"}
    assert len(VERBS) == 46  # the 42 of the grouping, gan import / export, federated certs / join


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"dermsynth {__version__}"


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_option_has_help_and_the_help_shows_its_default(verb):
    parser = VERBS[verb]
    assert parser.description, f"dermsynth {verb}: no description"
    undocumented = [a.option_strings[0] for a in parser._actions
                    if a.option_strings and not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert undocumented == [], f"dermsynth {verb}: options without help: {undocumented}"
    text = parser.format_help()
    for action in parser._actions:  # 0 is a default worth showing (`0 in (None, False)` would skip it)
        if action.option_strings and action.default is not None and action.default is not False \
                and action.default not in (argparse.SUPPRESS, "", []) and not isinstance(action, argparse._HelpAction):
            assert f"default: {action.default}" in " ".join(text.split()), (verb, action.option_strings[0])


def test_every_old_name_leads_to_a_verb_that_exists():
    assert set(RENAMED.values()) <= set(VERBS)
    assert not set(RENAMED) & set(VERBS), "an old name that is still a verb needs no alias"


def test_an_old_name_still_runs_with_one_line_naming_the_new_verb(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dermsynth", "sample-sheet", "--network", "missing.pt",
                             "--out", "sheet.png"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "dermsynth: `sample-sheet` is now `dermsynth gan sample-sheet` (the old name goes in a " \
                       "later release)"
    assert result.returncode == 2 and len(lines) == 2 and lines[1].startswith("dermsynth gan sample-sheet: error:")
    assert renamed(["gan", "train"]) == ["gan", "train"]


def test_the_rules_call_only_the_grouped_verbs():
    called = set()
    for path in sorted((REPO / "workflow").rglob("*.smk")):
        for match in re.finditer(r'"(?:dermsynth|\{params\.launcher\}) ([a-z0-9-]+)(?: ([a-z0-9-]+))?', path.read_text()):
            group, verb = match.groups()
            called.add(f"{group} {verb}" if group in GROUPS else group)
    assert called, "no rule runs dermsynth?"
    assert called <= set(VERBS), sorted(called - set(VERBS))


def test_a_renamed_flag_still_works_with_one_line_and_is_hidden_from_help(capsys):
    """`gan generate --diameter` was the neighbours' distance to their centre, a radius: the flag is `--radius`,
    and the old name sets it after one line naming the new one."""
    base = ["gan", "generate", "--network", "n.pt", "--out", "o", "--neighbors", "2"]
    args = build_parser().parse_args([*base, "--diameter", "0.1"])
    assert args.radius == 0.1 and not hasattr(args, "diameter")
    assert capsys.readouterr().err.strip().splitlines() == [
        "dermsynth gan generate: --diameter is now --radius (the old name goes in a later release)"]
    assert build_parser().parse_args([*base, "--radius", "0.2"]).radius == 0.2 and capsys.readouterr().err == ""
    assert build_parser().parse_args(base).radius is None
    text = VERBS["gan generate"].format_help()
    assert "--radius R" in text and "--diameter" not in text
