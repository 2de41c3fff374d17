"""The ``soak`` Hypothesis profile, loaded when HYPOTHESIS_PROFILE=soak (see __init__.py)."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("soak", deadline=None, print_blob=True)
if os.environ.get("HYPOTHESIS_PROFILE") == "soak":
    settings.load_profile("soak")
