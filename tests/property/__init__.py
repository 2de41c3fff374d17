"""Property-based tests: hostile input through every reader and parser (issue 8, item 3).

Each test feeds arbitrary or damaged input to one reader or parser and checks
that the outcome is a valid result or one of bpo's own errors, never another
exception. Run the soak version (50x the examples) with::

    HYPOTHESIS_PROFILE=soak .venv/bin/pytest tests/property
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SOAK = os.environ.get("HYPOTHESIS_PROFILE") == "soak"


def examples(count: int) -> settings:
    """The settings of a property test: `count` examples, 50x as many when soaking.

    No deadline: the machine is shared and timing varies; the tests that check
    speed measure it themselves.
    """
    return settings(
        max_examples=count * 50 if SOAK else count,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
