"""The registered components as text (``elbo-lab --list``) and as a README table."""

from __future__ import annotations

from pyro_elbo_lab.registry import REGISTRIES


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
