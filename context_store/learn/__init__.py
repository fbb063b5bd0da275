"""Step 7: staff answers become knowledge; review of answers gone stale."""
