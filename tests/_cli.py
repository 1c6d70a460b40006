"""Running the lthgan CLI in-process, and the shape of its usage errors."""
from __future__ import annotations

from click.testing import CliRunner

from lthgan.cli import main

TINY = ["--preset", "tiny", "--iterations", "4", "--eval-samples", "64", "--device", "cpu"]


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def one_error_line(result, *needles):
    """A usage error: exit code 2, one line on stderr starting with ``Error: ``, no traceback,
    holding every one of ``needles``. Returns the line."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and "Traceback" not in result.output, lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]
