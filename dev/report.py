"""
What the reports of the harnesses share: the commit of the checkout they ran from, and Markdown
tables (the study's results.md, the GPU check's summary.md).
"""

import subprocess
from typing import Sequence


def git_commit(repo: str) -> str:
    """The short hash of the commit checked out in `repo`, or why there is none."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
        )
    except FileNotFoundError:  # no git on the machine
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown (not a git checkout)"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table: the header, then one line of cells per row."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)
