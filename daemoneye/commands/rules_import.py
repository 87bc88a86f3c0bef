"""`daemoneye rules import PATH... [--out DIR|-]`: Sigma rules → TOML rule files.

Each Sigma file is loaded exactly as the daemon would load it (parsed, converted, compiled in
the sandbox); the rules that load are written as TOML, to standard output or as DIR/NAME.toml.
A directory argument stands for every *.yml/*.yaml below it. Rules that cannot be converted are
reported as `file:line: rule 'id': reason` and the command exits 2; rules for another
logsource are skipped with a note.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from daemoneye.commands.common import Context, note
from daemoneye.commands.rules import EXIT_PROBLEMS, RuleFileProblems
from daemoneye.engine.rule_file import SIGMA_SUFFIXES
from daemoneye.engine.rule_loader import RuleValidator, load_file
from daemoneye.engine.sigma_import import to_toml


def sigma_files(paths: list[Path]) -> list[Path]:
    """The Sigma files named by `paths`, directories expanded (recursively, sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.suffix in SIGMA_SUFFIXES and p.is_file())
            )
        elif path.is_file():
            found.append(path)
        else:
            raise RuleFileProblems(f"{path}: no such file or directory")
    return found


def import_rules(ctx: Context, paths: list[Path], out: str, *, force: bool = False) -> int:
    files = sigma_files(paths)
    if not files:
        raise RuleFileProblems("no Sigma files (*.yml, *.yaml) among the given paths")
    out_dir = None if out == "-" else Path(out)
    if out_dir is not None and not out_dir.is_dir():
        raise RuleFileProblems(f"{out_dir}: not a directory")
    failed = False
    written = 0
    validator = RuleValidator()
    try:
        for path in files:
            ruleset = load_file(path, validator)
            for notice in ruleset.notices:
                note(str(notice))
            imported = to_toml(str(path), ruleset.rules)
            for problem in (*ruleset.problems, *imported.problems):
                note(str(problem))
                failed = True
            if not imported.rules:
                continue
            if out_dir is None:
                sys.stdout.write(imported.text + "\n")
            else:
                target = out_dir / f"{path.stem}.toml"
                flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
                try:
                    fd = os.open(target, flags | os.O_NOFOLLOW, 0o644)
                except FileExistsError:
                    note(f"{target}: exists (give --force to replace it); {path} not written")
                    failed = True
                    continue
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(imported.text)
                note(f"{path} → {target}: {len(imported.rules)} rule(s)")
            written += len(imported.rules)
    finally:
        validator.close()
    note(f"{written} rule(s) imported from {len(files)} file(s)")
    return EXIT_PROBLEMS if failed else 0
