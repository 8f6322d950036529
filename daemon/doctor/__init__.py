"""`tigerwatch doctor`: checks a station's setup as the daemon's user meets it."""
