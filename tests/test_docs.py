"""The documentation is tested like code (rules in docs/development.md, "Documentation tests").

For README.md and every page in docs/:

* every ```python block runs, in order, in one namespace per page, in a fresh temporary folder with
  ``WFLWV_CACHE`` pointing into it, unless it is preceded by ``<!-- skip-test: reason -->``;
* every ```console / ```bash block preceded by ``<!-- run-test -->`` runs its ``$ wflwv ...`` lines through click's
  CliRunner on :data:`wflwv.cli.cli` (after the Python blocks above it); each must succeed and print every output
  line shown under it (``...`` skips);
* a page marked ``<!-- docs-test: slow (reason) -->`` is only run by the full suite;
* every relative link resolves to a file (and ``#anchor`` to a heading of it), and every ``wflwv COMMAND --option``
  written on the page exists in that command's ``--help`` (a bare ``--option`` in inline code must exist in some
  command).
"""

from __future__ import annotations

import re
import shlex
import sys
import types
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: pages whose code runs
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: pages whose links and command-line options are checked (the code of the last two is not meant to run)
CHECKED = [*PAGES, ROOT / "CHANGELOG.md", ROOT / "wflwv" / "models" / "weights" / "MODEL_CARD.md"]

SKIP_RE = re.compile(r"<!--\s*skip-test:\s*(\S.*?)\s*-->")
RUN_RE = re.compile(r"<!--\s*run-test\s*-->")
SLOW_RE = re.compile(r"^<!--\s*docs-test:\s*slow\b.*-->\s*$", re.M)
FENCE_RE = re.compile(r"^ {0,3}(`{3,})\s*([\w+-]*)[^`]*$")
LINK_RE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SPAN_RE = re.compile(r"(`+)(.+?)\1")
OPTION_RE = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")
COMMAND_RE = re.compile(r"(?<![\w./-])wflwv\s+(?=\S)")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ------------------------------------------------------------------------------------------------- parsing
@dataclass
class Block:
    """A fenced code block: its language, first line number (1-based, of the code), code, and the HTML comment
    markers written just before it (only blank lines may sit between)."""

    lang: str
    line: int
    code: str
    skip: str | None = None
    run: bool = False


@dataclass
class Page:
    path: str
    text: str
    blocks: list[Block] = field(default_factory=list)
    prose: str = ""  # the text outside fenced blocks

    @property
    def slow(self) -> bool:
        return bool(SLOW_RE.search(self.text))


def parse_page(text: str, path: str = "<page>") -> Page:
    """Split a markdown page into fenced blocks (with their markers) and the prose around them."""
    page = Page(path, text)
    lines = text.splitlines()
    prose: list[str] = []
    after_block = 0  # markers are looked for in the prose since the previous block only
    i = 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        j = i + 1
        while j < len(lines) and not re.match(rf"^ {{0,3}}{fence}`*\s*$", lines[j]):
            j += 1
        if j == len(lines):
            raise ValueError(f"{path}:{i + 1}: code block opened with {fence} is never closed")
        k = len(prose) - 1
        while k >= after_block and not prose[k].strip():
            k -= 1
        marker = prose[k] if k >= after_block else ""
        skip = SKIP_RE.fullmatch(marker.strip())
        page.blocks.append(
            Block(
                lang,
                i + 2,
                "\n".join(lines[i + 1 : j]) + "\n",
                skip.group(1) if skip else None,
                bool(RUN_RE.fullmatch(marker.strip())),
            )
        )
        prose.append("")  # a block ends a paragraph
        after_block = len(prose)
        i = j + 1
    page.prose = "\n".join(prose)
    return page


@cache
def load_page(path: Path) -> Page:
    return parse_page(path.read_text(encoding="utf-8"), _rel(path))


@dataclass
class Command:
    line: int
    argv: list[str]
    expected: list[str]


def console_commands(block: Block, where: str) -> list[Command]:
    """The ``$ ...`` commands of a console block with the output lines shown under each (``\\`` continues)."""
    out: list[Command] = []
    lines = block.code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            if out:
                out[-1].expected.append(line)
            elif line.strip():
                raise AssertionError(f"{where}:{block.line + i}: output before the first '$ ' command: {line!r}")
            i += 1
            continue
        start, cmd = i, line[2:]
        while cmd.endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = cmd[:-1] + " " + lines[i].strip()
        argv = shlex.split(cmd)
        if not argv or argv[0] != "wflwv":
            raise AssertionError(
                f"{where}:{block.line + start}: a run-test block may only hold `$ wflwv ...` commands, got {cmd!r}"
            )
        out.append(Command(block.line + start, argv[1:], []))
        i += 1
    if not out:
        raise AssertionError(f"{where}:{block.line}: a run-test block without any `$ wflwv ...` command")
    return out


# ------------------------------------------------------------------------------------------------- running
def _squash(text: str) -> str:
    return " ".join(text.split())


def run_command(cmd: Command, where: str) -> str:
    from click.testing import CliRunner

    from wflwv.cli import cli

    result = CliRunner().invoke(cli, cmd.argv, prog_name="wflwv")
    shown = f"$ wflwv {shlex.join(cmd.argv)}\n{result.output}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{where}:{cmd.line}: the command raised\n{shown}") from result.exception
    assert result.exit_code == 0, f"{where}:{cmd.line}: exit code {result.exit_code}\n{shown}"
    got = _squash(result.output)
    for line in cmd.expected:
        want = _squash(line)
        if want and want != "..." and want not in got:
            raise AssertionError(f"{where}:{cmd.line}: the output lacks the documented line {line!r}\n{shown}")
    return result.output


def run_page(page: Page) -> int:
    """Run a page's Python and run-test blocks in order (in the current folder); returns how many ran.

    Models and architectures the page registers are removed again afterwards.
    """
    from wflwv.models.archs import ARCHS
    from wflwv.models.registry import _REGISTRY

    name = "docs_" + re.sub(r"\W", "_", page.path.removesuffix(".md"))
    module = types.ModuleType(name)  # a real module, so that classes defined on the page behave as usual
    module.__file__ = page.path
    archs_before = dict(ARCHS)
    sys.modules[name] = module
    ran = 0
    try:
        for block in page.blocks:
            if block.skip is not None:
                continue
            if block.lang == "python":
                code = compile(block.code, f"{page.path}:{block.line}", "exec")
                try:
                    exec(code, module.__dict__)
                except Exception as exc:
                    raise AssertionError(
                        f"{page.path}: the python block at line {block.line} failed: {type(exc).__name__}: {exc}"
                    ) from exc
                ran += 1
            elif block.run:
                assert block.lang in ("console", "bash", "sh", "shell"), (
                    f"{page.path}:{block.line}: run-test marks a ```{block.lang} block; use ```console or ```bash"
                )
                for cmd in console_commands(block, page.path):
                    run_command(cmd, page.path)
                    ran += 1
    finally:
        sys.modules.pop(name, None)
        for key in [k for k, e in _REGISTRY.items() if e.source == name]:
            del _REGISTRY[key]
        for key in set(ARCHS) - set(archs_before):
            del ARCHS[key]
        ARCHS.update(archs_before)
    return ran


def _page_params():
    return [pytest.param(p, id=_rel(p), marks=[pytest.mark.slow] if load_page(p).slow else []) for p in PAGES]


@pytest.fixture
def one_torch_thread():
    """The examples work on tiny tensors, where more threads only add contention on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("path", _page_params())
def test_page_code_runs(path, tmp_path, monkeypatch, one_torch_thread):
    page = load_page(path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WFLWV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    runnable = [b for b in page.blocks if b.skip is None and (b.lang == "python" or b.run)]
    ran = run_page(page)
    assert ran >= len(runnable), f"{page.path}: {len(runnable)} runnable blocks but only {ran} things ran"


# ------------------------------------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Page) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", page.prose, re.M)}


def _strip_spans(text: str) -> str:
    return SPAN_RE.sub(lambda m: " " * len(m.group(0)), text)


def broken_links(page: Page, base: Path) -> list[str]:
    """Relative links of ``page`` (a file in folder ``base``) that do not resolve, with the reason."""
    problems = []
    for m in LINK_RE.finditer(_strip_spans(page.prose)):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (base / file_part).resolve() if file_part else None
        if dest is not None and not dest.exists():
            problems.append(f"{target}: no such file ({dest})")
            continue
        if anchor:
            if dest is None:
                target_page = page
            elif dest.suffix == ".md":
                target_page = parse_page(dest.read_text(encoding="utf-8"), str(dest))
            else:
                continue
            if anchor not in anchors(target_page):
                problems.append(f"{target}: no heading with the anchor #{anchor}")
    return problems


@pytest.mark.parametrize("path", CHECKED, ids=_rel)
def test_relative_links_resolve(path):
    page = load_page(path)
    problems = broken_links(page, path.parent)
    assert not problems, f"{page.path}: broken links:\n  " + "\n  ".join(problems)


def test_every_docs_page_is_in_the_index():
    index = load_page(ROOT / "docs" / "README.md")
    linked = {(ROOT / "docs" / m.group(1).partition("#")[0]).resolve() for m in LINK_RE.finditer(index.prose)}
    missing = [_rel(p) for p in PAGES[1:] if p.name != "README.md" and p.resolve() not in linked]
    assert not missing, f"docs/README.md does not list: {', '.join(missing)}"


# ------------------------------------------------------------------------------------------------- options
@cache
def cli_options() -> dict[tuple[str, ...], set[str]]:
    """``(command, subcommand...)`` -> the ``--options`` its ``--help`` shows; ``()`` is ``wflwv`` itself."""
    import click
    from click.testing import CliRunner

    from wflwv.cli import cli

    out: dict[tuple[str, ...], set[str]] = {}

    def walk(cmd: click.Command, path: tuple[str, ...]) -> None:
        res = CliRunner().invoke(cli, [*path, "--help"], prog_name="wflwv")
        assert res.exit_code == 0, f"wflwv {' '.join(path)} --help failed:\n{res.output}"
        out[path] = set(OPTION_RE.findall(res.output))
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, (*path, name))

    walk(cli, ())
    return out


def _command_texts(page: Page) -> list[tuple[str, bool]]:
    """Pieces of text that may name command-line options: ``(text, inline)``. Shell and plain code blocks give one
    piece per command (backslash or indented continuation lines joined); inline code spans give one each."""
    pieces: list[tuple[str, bool]] = []
    for block in page.blocks:
        if block.lang not in ("", "bash", "console", "sh", "shell"):
            continue
        current: list[str] = []
        for line in block.code.splitlines():
            continues = current and (current[-1].endswith("\\") or (line[:1].isspace() and line.strip()))
            if continues:
                current.append(line)
            else:
                if current:
                    pieces.append(("\n".join(current), False))
                current = [line]
        if current:
            pieces.append(("\n".join(current), False))
    pieces += [(m.group(2), True) for m in SPAN_RE.finditer(page.prose)]
    return pieces


def option_problems(page: Page) -> list[str]:
    """``wflwv COMMAND --option`` mentions (and bare ``--option`` spans) that the command line does not have."""
    known = cli_options()
    everything = set().union(*known.values())
    problems = []
    for text, inline in _command_texts(page):
        if inline and text.strip().startswith("--"):
            for opt in OPTION_RE.findall(text.split()[0]):
                if opt not in everything:
                    problems.append(f"`{text}`: no wflwv command has {opt}")
            continue
        for m in COMMAND_RE.finditer(text):
            rest = re.split(r"&&|;|\|\|", text[m.end() :])[0]
            words = rest.split()
            path: tuple[str, ...] = ()
            for w in words:
                if w.startswith("-") or (*path, w) not in known:
                    break
                path = (*path, w)
            if words and not path and not words[0].startswith("-"):
                if words[0].islower() and words[0].isalpha():
                    problems.append(f"{text.strip()!r}: wflwv has no command {words[0]!r}")
                continue  # a placeholder such as COMMAND
            for opt in OPTION_RE.findall(rest):
                if opt not in known[path]:
                    problems.append(f"{text.strip()!r}: `wflwv {' '.join(path)}` has no option {opt}")
    return problems


@pytest.mark.parametrize("path", CHECKED, ids=_rel)
def test_documented_options_exist(path):
    page = load_page(path)
    problems = option_problems(page)
    assert not problems, f"{page.path}:\n  " + "\n  ".join(problems)


def test_readme_starts_with_the_two_commands():
    first = load_page(ROOT / "README.md").blocks[0]
    assert first.lang == "bash"
    assert first.code.splitlines() == [
        "pip install -e '.[demo]' && wflwv demo run",
        "pip install -e '.[test]' && python3 -m pytest -q",
    ]


# ------------------------------------------------------------------------------------------------- the checker itself
SAMPLE = """\
# Sample

Text with a [good link](#sample), a [bad anchor](#nowhere) and a [missing file](no-such-file.md).
`wflwv bench --model x --no-such-option` and `--also-missing`, while `--model` and `wflwv --version` exist.

```python
x = 1
```

<!-- skip-test: would fail -->
```python
raise RuntimeError("skipped blocks must not run")
```

Writing `<!-- skip-test: x -->` in a sentence does not skip the next block:
```python
assert x == 1
y = x + 1
```

<!-- run-test -->
```console
$ wflwv models
oracle
...
```
"""


def test_checker_runs_blocks_honours_markers_and_reports_problems(tmp_path, monkeypatch):
    page = parse_page(SAMPLE, "sample.md")
    assert [(b.lang, b.skip is not None, b.run) for b in page.blocks] == [
        ("python", False, False),
        ("python", True, False),
        ("python", False, False),
        ("console", False, True),
    ]
    monkeypatch.chdir(tmp_path)
    assert run_page(page) == 3  # two python blocks sharing a namespace, one command
    assert sorted(broken_links(page, tmp_path)) == [
        "#nowhere: no heading with the anchor #nowhere",
        f"no-such-file.md: no such file ({tmp_path / 'no-such-file.md'})",
    ]
    problems = option_problems(page)
    assert len(problems) == 2
    assert "has no option --no-such-option" in problems[0] and "--also-missing" in problems[1]


@pytest.mark.parametrize(
    "bad, message",
    [
        ("```python\nraise ValueError('boom')\n```\n", "failed: ValueError: boom"),
        ("<!-- run-test -->\n```console\n$ wflwv models\nno-such-model\n```\n", "lacks the documented line"),
        ("<!-- run-test -->\n```console\n$ wflwv bench --model no-such-model\n```\n", "exit code 2"),
        ("<!-- run-test -->\n```console\n$ ls\n```\n", "may only hold"),
    ],
)
def test_checker_fails_on_broken_pages(bad, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssertionError, match=re.escape(message)):
        run_page(parse_page(bad, "bad.md"))
