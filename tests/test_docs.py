"""README stays true to the scripts: every flag a README command passes to a project script is one that script's
--help lists (the commands of docs/ beside their numbers are held to the same), every VAR=... set before a .sh file is a variable that file reads, every script it names exists, and
every link of README and docs/ resolves (files, and #anchors to their headings). pip and time lines are skipped
(their variables are for the tools the line times)."""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}
NOT_PROJECT_MODULES = ("pip", "pytest", "ruff", "venv")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def shell_lines(text: str) -> list[str]:
    """The shell lines of the fenced blocks that are not Python (continuations joined), and the inline code spans
    that are whole commands (`NPROC=8 sh run_train.sh`, `python data/...py --flag`)."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)  # notes to editors, not shown
    lines = []
    for lang, body in code_blocks(text):
        if lang in ("python", "py", "json"):
            continue
        lines += body.replace("\\\n", " ").splitlines()
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())  # a span may wrap across lines
        words = span.split()
        first = next((w for w in words if not ASSIGNMENT.match(w)), "")
        if first in ("python", "bash", "sh") and len(words) > 1:
            lines.append(span)
    return lines


def simple_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line (split at && ; | etc.), comments dropped; [] when it does not parse
    (output lines, prose)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        tokens = list(lex)
    except ValueError:
        return []
    commands, current = [], []
    for tok in tokens:
        if tok in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(tok)
    return [c for c in [*commands, current] if c]


@functools.cache
def help_text(target: str) -> str:
    """`--help` of a project script (path) or module (-m name), run in this process (imports are shared)."""
    out = io.StringIO()
    argv = sys.argv
    try:
        sys.argv = [target, "--help"]
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            if target.endswith(".py"):
                runpy.run_path(str(ROOT / target), run_name="__main__")
            else:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = argv
    return out.getvalue()


def help_options(target: str) -> set[str]:
    """The options the --help usage lists (every option argparse shows; not words of a description)."""
    text = help_text(target)
    usage = text.split("\n\n", 1)[0]
    options = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", usage))
    # option lines of the listing as well (a custom usage may abbreviate)
    options |= set(re.findall(r"^\s{2}(?:-\w, )?(--[\w-]+)", text, flags=re.M))
    return options


def flags_of(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--") and len(a) > 2]


def sh_reads(script: Path, name: str) -> bool:
    return re.search(r"\$\{?" + re.escape(name) + r"\b", script.read_text(encoding="utf-8")) is not None


def forwarded_to(script: Path) -> list[str]:
    """The project Python scripts a .sh file passes its own arguments to ("$@")."""
    text = script.read_text(encoding="utf-8")
    return sorted({m for m in re.findall(r"python3? ([\w/]+\.py)[^\n]*\"\$@\"", text)})


def check_command(cmd: list[str]) -> list[str]:
    """What is wrong with one README command (empty when it is right or runs no project script)."""
    words = list(cmd)
    assigned = []
    while words and ASSIGNMENT.match(words[0]):
        assigned.append(words.pop(0).split("=", 1)[0])
    if not words or words[0] in ("pip", "pip3", "time", "/usr/bin/time") or "pip" in words[:3]:
        return []
    prog, rest = words[0], words[1:]
    problems = []
    if prog in ("python", "python3"):
        if rest[:1] == ["-m"]:
            module, args = rest[1], rest[2:]
            if module.split(".")[0] in NOT_PROJECT_MODULES or not module.startswith("dpr"):
                return []
            if importlib.util.find_spec(module) is None:
                return [f"python -m {module}: no such module"]
            target = module
        elif rest and rest[0].endswith(".py"):
            target, args = rest[0], rest[1:]
            if not (ROOT / target).is_file():
                return [f"{target}: no such script"]
        else:
            return []
        flags = flags_of(args)
        if flags:
            known = help_options(target)
            problems += [f"{target} {f}: not in its --help" for f in flags if f not in known]
        return problems
    if prog in ("bash", "sh") or prog.endswith(".sh"):
        script_arg = prog if prog.endswith(".sh") else next((w for w in rest if w.endswith(".sh")), None)
        if script_arg is None:
            return []
        script = ROOT / script_arg.removeprefix("./")
        if not script.is_file():
            return [f"{script_arg}: no such script"]
        problems += [f"{script_arg}: {name}=... set, but the script never reads ${name}"
                     for name in assigned if not sh_reads(script, name)]
        args = rest[rest.index(script_arg) + 1:] if script_arg in rest else rest
        text = script.read_text(encoding="utf-8")
        for flag in flags_of(args):
            if flag in text or any(flag in help_options(py) for py in forwarded_to(script)):
                continue
            problems.append(f"{script_arg} {flag}: neither the script nor what it forwards \"$@\" to knows it")
    return problems


def doc_commands(doc: Path) -> list[list[str]]:
    return [c for line in shell_lines(doc.read_text(encoding="utf-8")) for c in simple_commands(line)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_commands_pass_only_flags_and_variables_their_scripts_know(doc):
    """README's commands (and, as they sit beside the numbers they made, those of docs/)."""
    commands = doc_commands(doc)
    runs = [c for c in commands if any(w.endswith((".py", ".sh")) for w in c)]
    if doc == README:
        assert len(runs) >= 10, "README's commands were not found: the parser no longer sees its code blocks"
    problems = [f"{' '.join(c)}\n    -> {p}" for c in commands for p in check_command(c)]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_what_it_is_for(tmp_path):
    """The check itself: a made-up flag, a variable the .sh never reads and a missing script are each reported."""
    assert check_command(["python", "data/bm25_retriever.py", "--qa_file", "q.json", "--n_docs", "5"]) == []
    assert check_command(["python", "data/bm25_retriever.py", "--no_such_flag", "1"]) == [
        "data/bm25_retriever.py --no_such_flag: not in its --help"]
    assert check_command(["EMB_DIR=x", "sh", "run_gen_emb.sh"]) == []
    assert check_command(["NO_SUCH_VAR=1", "sh", "run_gen_emb.sh"]) == [
        "run_gen_emb.sh: NO_SUCH_VAR=... set, but the script never reads $NO_SUCH_VAR"]
    assert check_command(["python", "data/no_such_script.py"]) == ["data/no_such_script.py: no such script"]
    assert check_command(["bash", "bench/gpu_check.sh", "--tiny"]) == []  # forwarded to bench/gpu_check.py
    assert check_command(["bash", "bench/gpu_check.sh", "--huge"]) != []
    assert check_command(["HF_HUB_OFFLINE=1", "/usr/bin/time", "-v", "bash", "run_demo.sh"]) == []  # time: skipped
    assert check_command(["pip", "install", "-r", "requirements.txt"]) == []
    lines = shell_lines("x\n```\nA=1 sh run_test.sh \\\n  # note\n```\nthen `B=2 sh run_x.sh` here\n"
                        "<!-- `C=3 sh run_y.sh` once it lands -->\n")
    assert [simple_commands(line) for line in lines] == [[["A=1", "sh", "run_test.sh"]], [["B=2", "sh", "run_x.sh"]]]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not - or _), each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def broken_links(doc: Path) -> list[str]:
    """The links of one markdown file (images included) whose file or #heading does not exist."""
    text = re.sub(r"^```.*?^```", "", doc.read_text(encoding="utf-8"), flags=re.S | re.M)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    broken = []
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_resolve(doc):
    assert not broken_links(doc), f"{doc.name}: " + "; ".join(broken_links(doc))


def test_a_broken_link_is_reported(tmp_path):
    (tmp_path / "a.md").write_text("# Title here\n## GPUs (one, two)\n## 1. 训练 train — `sh run_train.sh`\n", encoding="utf-8")
    doc = tmp_path / "b.md"
    doc.write_text("[ok](a.md#gpus-one-two) [top](a.md#title-here) ![img](a.md) [web](https://x.org/y)\n"
                   "[step](a.md#1-训练-train--sh-run_trainsh)\n"
                   "[gone](c.md) [bad anchor](a.md#nope)\n```\n[in code](d.md)\n```\n", encoding="utf-8")
    assert broken_links(doc) == ["c.md: no such file", "a.md#nope: no heading #nope in a.md"]
