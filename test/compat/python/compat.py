"""What the Python client scripts share: the demo's settings and the report.

A script prints one JSON line naming its client, version and planned cases,
then one line per case: {"case": ..., "ok": true/false, "detail": ...}.
A case is a function that returns a detail string or raises.
"""
import json
import os
import sys


class Failed(Exception):
    """A case saw something other than what it expected."""


def check(cond, message):
    if not cond:
        raise Failed(message)


def env(key):
    return os.environ[key]


def run(client, version, cases):
    """Runs cases, a list of functions named after their case, in order."""
    names = [c.__name__ for c in cases]
    print(json.dumps({"client": client, "version": version, "cases": names}), flush=True)
    for case in cases:
        try:
            detail, ok = case(), True
        except Exception as e:  # any failure is this case's, not the run's
            detail, ok = "%s: %s" % (type(e).__name__, str(e).strip()), False
        print(json.dumps({"case": case.__name__, "ok": ok, "detail": detail}), flush=True)
    sys.stdout.flush()
