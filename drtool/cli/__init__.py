"""Thin command-line layer: parse flags, call one operation, render its result.

Commands import their operation inside the command function, so `drtool --help` and `drtool config show` load no
SDK (tests/foundation/test_startup.py): that one rule covers every function-body import in cli/.
"""
