"""Fills a config template: `python -m bench.render TEMPLATE OUT KEY=VALUE...` ($KEY / ${KEY})."""

from __future__ import annotations

import sys
from pathlib import Path
from string import Template


def render(template: Path, out: Path, values: dict[str, str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # substitute, not safe_substitute: a placeholder left unfilled is a bug in the calling script.
    out.write_text(Template(template.read_text()).substitute(values))


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    values = dict(arg.split("=", 1) for arg in argv[2:])
    render(Path(argv[0]), Path(argv[1]), values)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
