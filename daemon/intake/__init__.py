"""Intake: from a path in an inbox to a queued row (names, events, rescans, stability)."""
