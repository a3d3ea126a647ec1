"""The registered components as text (``elbo-lab --list``) and as a README table."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pyro_elbo_lab.registry import REGISTRIES

START, END = "<!-- components:start -->", "<!-- components:end -->"


def component_listing() -> str:
    """Every registered name per kind with its one-line description."""
    lines = []
    for kind, registry in REGISTRIES.items():
        lines.append(f"{kind}s:")
        width = max(len(name) for name in registry.names())
        lines += [f"  {c.name:<{width}}  {c.description}" for c in registry]
    return "\n".join(lines)


def component_table() -> str:
    """The Markdown component table the README carries (a test keeps them in step)."""
    lines = ["| kind | name | description |", "|---|---|---|"]
    for kind, registry in REGISTRIES.items():
        lines += [
            f"| {kind} | `{c.name}` | {c.description.replace('|', chr(92) + '|')} |"
            for c in registry
        ]
    return "\n".join(lines)


def update_readme(path: Path) -> None:
    """Rewrite the component table between the README's ``components`` markers."""
    text = path.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    path.write_text(pattern.sub(lambda _: f"{START}\n{component_table()}\n{END}", text))


if __name__ == "__main__":  # python -m pyro_elbo_lab.lab.listing README.md
    update_readme(Path(sys.argv[1]))
