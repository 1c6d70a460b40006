"""One seed of a several-seed search, in its own process: ``python -m lthgan.search.worker
SEED_RUN_DIR MAX_LEVEL`` runs (or resumes) that seed's search up to level ``MAX_LEVEL``. The
coordinator (:mod:`lthgan.search.seeds`) decides which levels run; exit code 0 on success,
1 with the error's one line on stderr otherwise."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m lthgan.search.worker SEED_RUN_DIR MAX_LEVEL", file=sys.stderr)
        return 2
    from .start import resume_search

    try:
        resume_search(args[0], quiet=True, max_level=int(args[1]), stop_when_unmatched=False)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the coordinator reports the last line
        print(f"{type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
