"""`python -m cremad_lit <command> [args]`: runs cremad_lit/commands/<command>.py as a script.

python -m cremad_lit                        # the list of commands
python -m cremad_lit report logs/train/multiruns/<time>
"""

import runpy
import sys

from cremad_lit.commands import COMMANDS
from cremad_lit.errors import load_debug_plugins


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        given = (
            f"unknown command {sys.argv[1]!r}\n\n"
            if len(sys.argv) >= 2 and sys.argv[1] not in ("-h", "--help")
            else ""
        )
        width = max(map(len, COMMANDS))
        listing = "\n".join(f"  {name:<{width}}  {about}" for name, about in COMMANDS.items())
        sys.stderr.write(f"{given}usage: python -m cremad_lit <command> [args]\n\n{listing}\n")
        raise SystemExit(2 if given else 0)
    command = sys.argv.pop(1)
    load_debug_plugins()  # a debug setting, empty in use (errors.py)
    # As a script (its __name__ is "__main__"), so Hydra finds conf/ relative to the command's file, as with -m.
    runpy.run_module(f"cremad_lit.commands.{command}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
