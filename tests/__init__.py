import os
import sys

from hypothesis import settings

# Run only by trial (tox, python -m twisted.trial): it runs every test inside
# its own temporary directory, so nothing a test writes lands in the tree.
# The benchmark (python -m tests.benchmarks) writes to a directory of its own.
_benchmark = "tests.benchmarks" in getattr(sys, "orig_argv", [])
if "twisted.scripts.trial" not in sys.modules and not _benchmark:
    raise ImportError(
        "run the tests with trial: `tox` or `python -m twisted.trial tests` "
        "(other runners write test output into the source tree)"
    )

# CI runs the same examples every time; a developer's run explores new ones.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
