"""The staff loop: verdicts on frames, measured precision and recall, calibration, the audit."""
