"""What the drivers share: the runner to talk to, from the environment the
Rust test sets, and checks that say what differed."""

import json
import os
import sys

HOST = os.environ["SMOLPAWS_URL"]
KEY = os.environ["SMOLPAWS_TOKEN"]
# A directory inside the runner's workspace root, made by the test.
WORKDIR = os.environ["SMOLPAWS_WORKDIR"]


def check(condition, what, seen=None):
    """Fails the driver, saying what was expected and what was seen."""
    if not condition:
        detail = "" if seen is None else f": saw {seen!r}"
        raise AssertionError(f"{what}{detail}")


def report(**facts):
    """The driver's findings, for the Rust test: one JSON line, the last."""
    sys.stdout.write(json.dumps(facts) + "\n")
    sys.stdout.flush()
