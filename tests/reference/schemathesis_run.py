"""Runs the schemathesis CLI with its arguments.

One work-around, for a CPython 3.11 bug (gh-106905): `ast.parse`, called
deep in a stack, can raise "SystemError: AST constructor recursion depth
mismatch". Hypothesis calls it to describe a lambda for its messages, and
the error then fails a test case that had nothing wrong with it. Here the
description falls back to Hypothesis's own "lambda: <unknown>" instead.
"""

import sys

from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _describe_or_not(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _describe_or_not

from schemathesis.cli import schemathesis  # noqa: E402

sys.exit(schemathesis())
