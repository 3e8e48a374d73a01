"""What to run when something is wrong: the stack's versions, every native library loaded, a generated clip decoded
through each decoder path, the accelerator and precision train.py would use, and the cache folder's free space.

    python -m cremad_lit doctor                              # exits non-zero naming the broken part and the fix
    python -m cremad_lit doctor --quick                      # native libraries only (make install ends with this)
    python -m cremad_lit doctor --against-lock requirements.lock    # also: what differs from the lock (check-latest)
    python -m cremad_lit doctor --pip-check pyproject.toml  # pip check, less the overrides the manifest declares
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

from cremad_lit.checks import STACK, lock_differences, pip_check_problems, run_checks
from cremad_lit.environment import _version, failure_message


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cremad_lit doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only load the native libraries")
    parser.add_argument(
        "--cache-dir", default="data/cache", help="the cache folder to report on (paths.cache_dir)"
    )
    parser.add_argument(
        "--against-lock", type=Path, help="list installed versions that differ from this lock file"
    )
    parser.add_argument(
        "--pip-check",
        type=Path,
        help="only run pip check, ignoring the overrides this pyproject.toml declares",
    )
    args = parser.parse_args(argv)
    if args.pip_check:
        problems = pip_check_problems(args.pip_check)
        print("\n".join(problems) or f"pip check: no broken requirements beyond {args.pip_check}'s overrides")
        return 1 if problems else 0

    print(
        f"cremad-lit {_version('cremad-lit')} on Python {platform.python_version()} ({platform.platform()})"
    )
    print("  " + ", ".join(f"{name} {_version(name)}" for name in STACK))
    checks = run_checks(args.quick, Path(args.cache_dir))
    if args.against_lock:
        differences = lock_differences(args.against_lock)
        print(f"installed versions that differ from {args.against_lock} ({len(differences)}):")
        for row in differences:
            print(f"  {row}")
    failed = [c for c in checks if not c.ok]
    if failed:
        print(
            "\n" + failure_message(failed).replace("so nothing was started", "so runs would stop"),
            file=sys.stderr,
        )
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
