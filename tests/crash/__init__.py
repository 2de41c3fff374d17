"""kill -9 mid-output, then a rerun: the crash-safety harness and its tests (issue 8, item 1)."""
