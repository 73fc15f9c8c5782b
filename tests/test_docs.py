"""The documentation is run (issue 29): README.md and docs/*.md say nothing a reader cannot do.

- Every ```bash block of a page is run, in order, in a fresh working directory per page that holds what a clone
  of the repository holds (the workflow, the configs, the profiles; no results), the way a reader following the
  page runs it. A block right after `<!-- docs-test: skip (<reason>) -->` is not run (the reason must be said:
  a GPU, a SLURM cluster, the network, the whole demo DAG); after `<!-- docs-test: dry-run -->` every
  `snakemake` in it runs with `-n` (the demo DAG, training: the plan is checked, nothing is computed).
- Every `dermsynth …` command of a page (in a bash block or in running text) is one the real parser knows: a
  command in a bash block parses with `build_parser().parse_args`, a mention in the text (which may leave out
  required flags, or write `…`) names an existing group and verb and only flags that verb has.
- Every relative link points to a file that exists (and to a heading of it, with `#anchor`); every
  `docs/<page>.md, '<section>'` a message in src/ points a user to exists.
- Every `results/…` path a page names is one the workflow declares (an output of a demo or study job in
  `snakemake --summary`, or a folder of them), or a file a verb writes beside its declared outputs (its folder
  holds outputs and its name is in the code that writes it).
- docs/cli.md is generated from the parser (`python tests/test_docs.py` rewrites it): it cannot drift.

Slower checks (Snakemake itself) are marked `workflow`."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from dermsynth.cli import GROUPS, RENAMED, build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLI_PAGE = ROOT / "docs" / "cli.md"
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
MARK = re.compile(r"^<!--\s*docs-test:\s*(?P<mode>[\w-]+)\s*(?:\((?P<reason>.*)\))?\s*-->\s*$")
MODES = ("skip", "dry-run")
# fenced blocks hold commands (bash), files (yaml, toml, python, csv, json) or diagrams and listings (text, none)
LANGUAGES = {"bash", "yaml", "toml", "python", "csv", "json", "text", ""}
# what a fresh clone holds and a page's commands need: linked (read only) or copied (a page may write there)
LINKED = ("Snakefile", "workflow", "src", "pyproject.toml")
COPIED = ("config", "profiles", "resources/README.md")


@dataclass(frozen=True)
class Block:
    """A ```bash block of a page: its first line's number, its text, and how the test runs it."""
    page: Path
    line: int
    code: str
    mode: str = "run"       # run, skip, dry-run
    reason: str = ""


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


@cache
def blocks(page: Path) -> tuple[Block, ...]:
    """The ```bash blocks of `page`, each with the docs-test mark on the line before it (blank lines between
    allowed). Raises AssertionError for a mark that no bash block follows, an unknown mode or language."""
    lines, found, mark, i = page.read_text().splitlines(), [], None, 0
    while i < len(lines):
        line = lines[i]
        if (m := MARK.match(line.strip())):
            assert m["mode"] in MODES, f"{_rel(page)}:{i + 1}: docs-test mode {m['mode']!r} is not one of {MODES}"
            mark = (m["mode"], (m["reason"] or "").strip(), i + 1)
        elif (f := FENCE.match(line)):
            language, start = f[1], i + 1
            assert language in LANGUAGES, f"{_rel(page)}:{start}: a ```{language} block: commands go in ```bash"
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            if language == "bash":
                mode, reason, _ = mark or ("run", "", 0)
                found.append(Block(page, start, "\n".join(lines[start:i]), mode, reason))
            else:
                assert mark is None, f"{_rel(page)}:{mark[2]}: a docs-test mark before a ```{language} block"
            mark = None
        elif line.strip() and mark is not None:
            raise AssertionError(f"{_rel(page)}:{mark[2]}: a docs-test mark with no ```bash block after it")
        i += 1
    return tuple(found)


def prose(page: Path) -> str:
    """The page without its fenced blocks."""
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)


# --- the marks -------------------------------------------------------------------------------------------------

def test_every_skip_says_why_and_every_page_has_commands_to_follow():
    for page in PAGES:
        for block in blocks(page):
            if block.mode == "skip":
                assert block.reason, f"{_rel(page)}:{block.line}: `docs-test: skip` needs a reason: (<reason>)"
    assert {p.name for p in PAGES} >= {"README.md", "getting-started.md", "slurm.md", "outputs.md", "cli.md"}
    for name in ("README.md", "getting-started.md", "slurm.md"):
        page = ROOT / name if name == "README.md" else ROOT / "docs" / name
        assert blocks(page), f"{name} has no ```bash block"


def test_marks_are_read(tmp_path):
    """A mark applies to the next bash block only; a mark before no bash block, or of no known mode, fails."""
    page = tmp_path / "p.md"
    page.write_text("<!-- docs-test: skip (needs a GPU) -->\n\n```bash\na\n```\n```bash\nb\n```\n"
                    "<!-- docs-test: dry-run -->\n```bash\nsnakemake\n```\n")
    assert [(b.mode, b.reason, b.code) for b in blocks(page)] == [
        ("skip", "needs a GPU", "a"), ("run", "", "b"), ("dry-run", "", "snakemake")]
    for text in ("<!-- docs-test: skip (x) -->\ntext\n", "<!-- docs-test: later -->\n```bash\na\n```\n",
                 "<!-- docs-test: skip (x) -->\n```yaml\na: 1\n```\n", "```sh\nls\n```\n"):
        page.write_text(text)
        blocks.cache_clear()
        with pytest.raises(AssertionError):
            blocks(page)
    blocks.cache_clear()


# --- `dermsynth …` commands --------------------------------------------------------------------------------------

def commands(code: str) -> list[list[str]]:
    """The simple commands of a bash block (continuation lines joined, comments dropped), split at `&&`, `||`,
    `;` and `|`, as token lists."""
    found = []
    for line in code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        current: list[str] = []
        for token in lexer:
            if token in ("&&", "||", ";", "|", "&"):
                found.append(current)
                current = []
            else:
                current.append(token)
        found.append(current)
    return [c for c in found if c]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _placeholder(token: str) -> bool:
    return any(mark in token for mark in ("<", "…", "...", "{"))


def mention_error(tokens: list[str]) -> str | None:
    """Why `dermsynth <tokens>` (a mention, which may leave out required flags) names no real command: a group
    or verb the parser lacks, or a flag its verb lacks; None when it is fine. A placeholder (`<verb>`, `…`)
    ends the check."""
    parser, i = build_parser(), 0
    while (choices := _subcommands(parser)) and i < len(tokens) and not tokens[i].startswith("-"):
        if _placeholder(tokens[i]):
            return None
        if tokens[i] not in choices:
            return f"`{parser.prog} {tokens[i]}`: no such command (one of {', '.join(choices)})"
        parser, i = choices[tokens[i]], i + 1
    flags = {s for action in parser._actions for s in action.option_strings}
    for token in tokens[i:]:
        if _placeholder(token):
            return None
        name = token.split("=", 1)[0]
        if token.startswith("-") and not re.fullmatch(r"-[\d.e-]+", token) and name not in flags:
            return f"`{parser.prog}` has no flag {name}"
    return None


def parse_error(tokens: list[str]) -> str | None:
    """What argparse says about `dermsynth <tokens>` as a whole command line (None: it parses)."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(tokens)
    except SystemExit as exc:
        return None if exc.code == 0 else said.getvalue().strip().splitlines()[-1]
    return None


def dermsynth_commands() -> list[tuple[str, list[str], bool]]:
    """(where, tokens after `dermsynth`, whole) for every `dermsynth …` command of every page: `whole` for a
    command of a bash block without placeholders (it must parse), else a mention."""
    found = []
    for page in PAGES:
        for block in blocks(page):
            for command in commands(block.code):
                if command[0] == "dermsynth":
                    whole = not any(map(_placeholder, command)) and not {"-h", "--help"} & set(command)
                    found.append((f"{_rel(page)}:{block.line}", command[1:], whole))
        for match in re.finditer(r"`dermsynth ([^`]+)`", prose(page)):
            text = match[1].rstrip("\\")  # a code span inside a code span: `… \`dermsynth --help\` …`
            try:
                tokens = shlex.split(text)
            except ValueError:
                tokens = text.split()
            line = prose(page)[:match.start()].count("\n") + 1
            found.append((f"{_rel(page)} (text near line {line})", tokens, False))
    return found


def test_every_dermsynth_command_in_the_docs_is_one_the_parser_knows():
    found = dermsynth_commands()
    assert len(found) > 20  # the pages do name commands
    problems = [f"{where}: dermsynth {' '.join(tokens)}: {error}" for where, tokens, whole in found
                if (error := mention_error(tokens) or (parse_error(tokens) if whole else None))]
    assert not problems, "\n".join(problems)


def test_the_command_check_catches_what_a_reader_would_trip_on():
    assert mention_error(["gan", "train", "--lmdb", "x"]) is None
    assert mention_error(["gan", "generate", "--no-such-flag", "1"]) is not None
    assert mention_error(["train-gan"]) is not None  # a flat name of an earlier release: docs use the new one
    assert mention_error(["<group>", "--help"]) is None
    assert parse_error(["check-config", "--config", "my.yaml"]) is None
    assert parse_error(["gan", "train"]) is not None  # required flags left out: fine in text, not in a block


# --- links -------------------------------------------------------------------------------------------------------

def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in page.read_text().splitlines() if re.match(r"#{1,6} ", line)}


def test_every_relative_link_points_to_a_file_and_heading_that_exist():
    problems, links = [], 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
            if re.match(r"[a-z]+:", target):
                continue
            links += 1
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                problems.append(f"{_rel(page)}: link to {target}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                problems.append(f"{_rel(page)}: link to {target}: no heading #{anchor} in {file.name}")
    assert links > 10 and not problems, "\n".join(problems)


def test_every_docs_page_a_message_names_exists():
    """A message (or a config's comment) that sends a user to `docs/<page>.md, '<section>'` names a page and a
    heading that exist."""
    problems = []
    sections = 0
    sources = [*(ROOT / "src").rglob("*.py"), *(ROOT / "config").glob("*.yaml"), *(ROOT / "workflow").rglob("*.smk")]
    for source in sorted(sources):
        for page, section in re.findall(r"(docs/[\w.-]+\.md)(?:, ['\"]([^'\"]+)['\"])?", source.read_text()):
            sections += bool(section)
            target = ROOT / page
            if not target.exists():
                problems.append(f"{source.relative_to(ROOT)}: {page}: no such page")
            elif section and slug(section) not in anchors(target):
                problems.append(f"{source.relative_to(ROOT)}: {page} has no section '{section}'")
    assert sections >= 2 and not problems, "\n".join(problems)  # the archive message, the study config


# --- docs/cli.md -------------------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(action.option_strings) or action.dest
        if action.choices and not action.option_strings:
            names = "{" + ",".join(map(str, action.choices)) + "}"
        elif action.nargs != 0 and action.option_strings:
            names += " " + formatter._format_args(action, formatter._get_default_metavar_for_optional(action))
        text = formatter._expand_help(action) if action.help else ""
        rows.append(f"| `{names}`{' (required)' if action.required and action.option_strings else ''} | "
                    f"{_cell(text)} |")
    return rows


def _verb_section(name: str, parser: argparse.ArgumentParser) -> list[str]:
    rows = _option_rows(parser)
    return [f"### `{name}`", "", _cell(parser.description or ""), "",
            *(["| option | what it is |", "|---|---|", *rows, ""] if rows else [])]


def cli_reference() -> str:
    """docs/cli.md: every group and verb of `dermsynth`, with each option's help and default, from the parser."""
    parser = build_parser()
    top = _subcommands(parser)
    out = ["# The `dermsynth` command", "",
           "<!-- Generated from the parser by `python tests/test_docs.py`; tests/test_docs.py fails when it differs."
           " Do not edit by hand. -->", "",
           _cell(parser.description or ""), "",
           "By hand, a verb that reads configuration takes the whole config (`--config`, and the job's name such as "
           "`--gan`) instead of the options file the workflow passes (`--options`). "
           "`dermsynth <group> <verb> --help` prints the same text as below.", "",
           "| command | what it does |", "|---|---|"]
    out += [f"| [`dermsynth {name}`](#dermsynth-{name}) | {_cell(GROUPS.get(name) or sub.description or '')} |"
            for name, sub in top.items()]
    out.append("")
    for name, sub in top.items():
        out += [f"## dermsynth {name}", ""]
        verbs = _subcommands(sub)
        if not verbs:
            out += _verb_section(f"dermsynth {name}", sub)[2:]
            continue
        out += [_cell(GROUPS[name]), ""]
        for verb, verb_parser in verbs.items():
            out += _verb_section(f"dermsynth {name} {verb}", verb_parser)
    out += ["## Names of earlier releases", "",
            "The flat verb names of earlier releases still run, with one line on stderr naming the new verb; "
            "they go in a later release.", "", "| old | now |", "|---|---|",
            *(f"| `{old}` | `dermsynth {new}` |" for old, new in RENAMED.items()), ""]
    return "\n".join(out)


def test_the_cli_page_is_the_parser():
    assert CLI_PAGE.read_text() == cli_reference(), \
        "docs/cli.md differs from the parser: run `python tests/test_docs.py` to rewrite it"


# --- running the pages -------------------------------------------------------------------------------------------

def workspace(root: Path) -> Path:
    """A fresh working directory holding what a clone holds and a page's commands read: the workflow and the
    package source linked, the configs, profiles and the `slurm` profile link copied; no results."""
    root.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        (root / name).symlink_to(ROOT / name)
    for name in COPIED:
        source, target = ROOT / name, root / name
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    (root / "slurm").symlink_to(os.readlink(ROOT / "slurm"))
    return root


def _study_archives(root: Path) -> None:
    """Placeholders where config/study.yaml's archives go (a dry run reads none of them): the reader of
    docs/slurm.md has the archives in place."""
    # deferred: a relative import, which `python tests/test_docs.py` (rewriting docs/cli.md) cannot make
    from .conftest import placeholder_archives
    placeholder_archives(root, root / "config" / "study.yaml")


# pages whose reader has more than a clone: what the test puts in place first
PAGE_SETUP = {"slurm.md": _study_archives, "studies.md": _study_archives}


def dry(code: str) -> str:
    """`code` with every `snakemake` command given `-n` (unless it has it)."""
    def add(match: re.Match) -> str:
        return match[0] if re.search(r"\s(-n|--dry-run)\b", match[0]) else f"{match[1]}snakemake -n{match[2]}"
    return re.sub(r"(^|&&\s*|;\s*|\|\|\s*)snakemake\b([^\n&;|]*)", add, code, flags=re.M)


def test_dry_adds_n_to_every_snakemake_command():
    assert dry("snakemake --cores 2\ncd x && snakemake t") == "snakemake -n --cores 2\ncd x && snakemake -n t"
    assert dry("snakemake -n --cores 2 # plan") == "snakemake -n --cores 2 # plan"


def run_block(block: Block, cwd: Path) -> subprocess.CompletedProcess:
    """Run `block` with bash (-e, pipefail) in `cwd`, with this interpreter's environment first on PATH. Refuses
    a block that installs packages: it would change the environment the tests run in (mark it skip)."""
    assert not re.search(r"\bpip\s+install\b", block.code), \
        f"{_rel(block.page)}:{block.line}: a block that installs packages must be marked `docs-test: skip (<reason>)`"
    code = dry(block.code) if block.mode == "dry-run" else block.code
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


RUN_PAGES = [p for p in PAGES if any(b.mode != "skip" for b in blocks(p))]


@pytest.mark.workflow
@pytest.mark.parametrize("page", RUN_PAGES, ids=[p.name for p in RUN_PAGES])
def test_the_commands_of_a_page_run(page, tmp_path):
    cwd = workspace(tmp_path / "clone")
    if page.name in PAGE_SETUP:
        PAGE_SETUP[page.name](cwd)
    for block in blocks(page):
        if block.mode == "skip":
            continue
        done = run_block(block, cwd)
        assert done.returncode == 0, (f"{_rel(page)}:{block.line} ({block.mode}) exited {done.returncode}:\n"
                                      f"{block.code}\n--- output ---\n{(done.stdout + done.stderr)[-4000:]}")


# --- results paths -----------------------------------------------------------------------------------------------

def _alternatives(path: str) -> list[str]:
    """`path` with `{a,b}` and `<a|b>` expanded into one path per alternative."""
    m = re.search(r"\{([^{}]*,[^{}]*)\}|<([^<>]*\|[^<>]*)>", path)
    if not m:
        return [path]
    options = (m[1] or m[2]).split("," if m[1] else "|")
    return [p for option in options for p in _alternatives(path[:m.start()] + option + path[m.end():])]


def results_paths() -> dict[str, str]:
    """{path pattern: where} for every `results/…` path the pages name."""
    found = {}
    for page in PAGES:
        text = page.read_text().replace("\\|", "|")
        for block in blocks(page):  # a block that is run checks its own paths (a target of the page's config)
            if block.mode != "skip":
                text = text.replace(block.code, "\n" * block.code.count("\n"))
        for match in re.finditer(r"results/(?:\{[^{}\s]*\}|<[^<>\n]*>|[^\s`'\"()\[\]:;,{<])*", text):
            raw = match[0].rstrip(".").replace("[,", ",").replace("]", "")  # {test,validation[,synthetic]}
            for path in _alternatives(raw):
                found.setdefault(path, f"{_rel(page)}:{text[:match.start()].count(chr(10)) + 1}")
    return found


def _regex(pattern: str) -> str:
    out, i = "", 0
    for m in re.finditer(r"<[^<>/]*>|\*|…", pattern):
        out += re.escape(pattern[i:m.start()]) + "[^/]+"
        i = m.end()
    return out + re.escape(pattern[i:])


def test_path_patterns_expand_and_match():
    assert _alternatives("results/x/{a,b}/pcx-<baseline|augmented>.png") == [
        "results/x/a/pcx-baseline.png", "results/x/a/pcx-augmented.png",
        "results/x/b/pcx-baseline.png", "results/x/b/pcx-augmented.png"]
    assert re.fullmatch(_regex("results/gan/<gan>/network-snapshot-step<N>.pt"),
                        "results/gan/cgan/network-snapshot-step0000032.pt")
    assert not re.fullmatch(_regex("results/gan/<gan>/samples.png"), "results/gan/cgan/x/samples.png")


def declared_outputs(tmp_path: Path) -> set[str]:
    """Every output of every job the demo config and the study config plan (`snakemake --summary`)."""
    cwd = workspace(tmp_path / "plan")
    _study_archives(cwd)
    outputs = set()
    for extra in ([], ["--configfile", "config/study.yaml"]):
        done = subprocess.run([sys.executable, "-m", "snakemake", "--summary", "--cores", "1", *extra], cwd=cwd,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs |= {line.split("\t")[0] for line in done.stdout.splitlines()[1:] if line.startswith("results/")}
    return outputs


@pytest.mark.workflow
def test_every_results_path_a_page_names_is_one_the_workflow_writes(tmp_path):
    outputs = declared_outputs(tmp_path)
    folders = {str(parent) for o in outputs for parent in Path(o).parents} | outputs
    code = "\n".join(p.read_text() for p in (ROOT / "src" / "dermsynth").rglob("*.py"))
    code += "\n".join(p.read_text() for p in (ROOT / "workflow").rglob("*.smk"))
    problems = []
    for path, where in sorted(results_paths().items()):
        if (ROOT / path).exists():  # results/README.md
            continue
        folder, name = path.rstrip("/").rsplit("/", 1)
        pattern = _regex(f"{folder}/{name}")
        if any(re.fullmatch(f"{pattern}(/.*)?", o) for o in outputs):
            continue  # an output, or a folder of outputs
        literal = max(re.split(r"<[^<>/]*>|\*|…", name), key=len)
        if any(re.fullmatch(_regex(folder), f) for f in folders) and len(literal) >= 3 and literal in code:
            continue  # a file written beside declared outputs, named in the code
        problems.append(f"{where}: {path}")
    assert not problems, "paths no job writes:\n" + "\n".join(problems)


if __name__ == "__main__":  # rewrite docs/cli.md from the parser
    CLI_PAGE.write_text(cli_reference())
    print(f"wrote {CLI_PAGE.relative_to(ROOT)}")
