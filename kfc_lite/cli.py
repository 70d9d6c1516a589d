"""``kfc-lite``: long runs outside a notebook.

Sub-commands are contributed by the modules that own them, each through a ``register(subparsers)``
function, so the command line stays next to the code it drives:

* ``kfc-lite info``                       versions, device, dataset cache (here)
* ``kfc-lite data list|download|info|make`` (``kfc_lite.data.cli``)
* ``kfc-lite train``, ``kfc-lite eval`` and ``kfc-lite train-online`` (``kfc_lite.train.cli``)
* ``kfc-lite sweep``                      many runs on Ray (``kfc_lite.sweep.cli``)
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

#: Modules that add sub-commands; each defines ``register(subparsers)``.
COMMAND_MODULES = ["kfc_lite.data.cli", "kfc_lite.train.cli", "kfc_lite.sweep.cli"]


def _info(args: argparse.Namespace) -> int:
    from kfc_lite.info import format_report, report

    info = report()
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kfc-lite", description="Koopman Q-learning (KFC) course tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="print versions, the device that would be used and the dataset cache")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_info)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a part of the course not installed in this checkout
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as exc:
        # Bad input gets a message, not a traceback; the message names the problem and the fix.
        print(f"kfc-lite {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
