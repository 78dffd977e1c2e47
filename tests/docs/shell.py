"""Run a doc example's commands the way a shell would, fast: `vlmdata` / `vlmtrain` in this process.

A plain command line (`VAR=value vlmdata ...`, optionally `> FILE`) of vlmdata or vlmtrain runs
in-process through the console scripts' own entry points (no interpreter start per command).
`export VAR=value` and `cd DIR` change the example's shell state. Anything else (pipes, `&&`, globs,
`$VAR`, other programs) goes to bash with the same state and vlmdata/vlmtrain on its PATH.

Absolute paths under /data, /mnt, /media, /scratch and /shared in an example are mapped into the
example's sandbox (``<sandbox>/_abs/...``) and mapped back in its output, so a page can show the
paths a user would type.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.cli_runner import run_main

ABS = re.compile(r"(?<![\w./~-])(/(?:data|mnt|media|scratch|shared))(?=/|\b)")
SHELLISH = re.compile(r"[|&;<(){}*?$`~!]")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Ran:
    code: int
    out: str
    err: str
    how: str  # "in-process" or "bash"

    @property
    def text(self) -> str:
        return self.out + ("\n" if self.out and not self.out.endswith("\n") else "") + self.err


@dataclass
class Shell:
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)  # added to os.environ for every command

    @property
    def abs_root(self) -> Path:
        return self.cwd / "_abs"

    def map_in(self, text: str) -> str:
        return ABS.sub(lambda m: f"{self.abs_root}{m.group(1)}", text)

    def map_out(self, text: str) -> str:
        return ANSI.sub("", text.replace(str(self.abs_root), ""))

    def run(self, line: str) -> Ran:
        line = self.map_in(line)
        self.abs_root.mkdir(parents=True, exist_ok=True)
        words = self._plain(line)
        if words is None:
            return self._bash(line)
        env, words = _assignments(words)
        if words[:1] == ["export"] and not env:
            extra, rest = _assignments(words[1:])
            if rest:
                return self._bash(line)
            self.env.update(extra)
            return Ran(0, "", "", "in-process")
        if words[:1] == ["cd"] and len(words) == 2 and not env:
            self.cwd = (self.cwd / words[1]).resolve()
            return Ran(0, "", "", "in-process")
        redirect = None
        if len(words) >= 2 and words[-2] == ">":
            redirect, words = words[-1], words[:-2]
        if not words or words[0] not in ("vlmdata", "vlmtrain") or ">" in words:
            return self._bash(line)
        ran = self._in_process(words, env)
        if redirect is not None:
            (self.cwd / redirect).write_text(ran.out, encoding="utf-8")
            ran = Ran(ran.code, "", ran.err, ran.how)
        return Ran(ran.code, self.map_out(ran.out), self.map_out(ran.err), ran.how)

    # ------------------------------------------------------------------ ways to run
    def _plain(self, line: str) -> list[str] | None:
        """The words of a line that needs no shell (quotes allowed; one final `> FILE` allowed)."""
        body, sep, target = line.partition(" > ")
        if SHELLISH.search(_unquoted(body)) or (sep and (SHELLISH.search(target) or " " in target.strip())):
            return None
        try:
            words = shlex.split(body)
        except ValueError:
            return None
        return words + ([">", target.strip()] if sep else [])

    def _in_process(self, words: list[str], env: dict[str, str]) -> Ran:
        if words[0] == "vlmdata":
            from vlmdata.cli.app import main
        else:
            from vlmtrain.cli import main
        old = Path.cwd()
        os.chdir(self.cwd)
        try:
            res = run_main(main, words[0], *words[1:], env={**self.env, **env})
        finally:
            os.chdir(old)
        return Ran(res.code, res.out, res.err, "in-process")

    def _bash(self, line: str) -> Ran:
        env = {**os.environ, **self.env}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=self.cwd, env=env, text=True,
                              capture_output=True, timeout=600)
        return Ran(proc.returncode, self.map_out(proc.stdout), self.map_out(proc.stderr), "bash")


def _unquoted(text: str) -> str:
    """``text`` without its quoted parts, unless a double-quoted part expands something ($, `)."""
    text = re.sub(r"'[^']*'", "''", text)
    return re.sub(r'"[^"$`]*"', '""', text)


def _assignments(words: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        k, v = words[0].split("=", 1)
        env[k] = v
        words = words[1:]
    return env, words


def matches(shown: list[str], actual: str) -> list[str]:
    """The shown output lines that no line of ``actual`` matches (`...` matches anything, runs of
    spaces match any run of spaces; each actual line serves one shown line)."""
    lines = [ln.strip() for ln in actual.splitlines() if ln.strip()]
    used: set[int] = set()
    missing = []
    for want in shown:
        w = want.strip()
        if not w or w == "...":
            continue
        pattern = re.compile(r"\s+".join(".*".join(re.escape(p) for p in word.split("..."))
                                         for word in w.split()))
        hit = next((i for i, ln in enumerate(lines) if i not in used and pattern.fullmatch(ln)), None)
        if hit is None:
            missing.append(want)
        else:
            used.add(hit)
    return missing
