"""Step 8: freshness, outcomes and resolution, retrieval and routing quality, the promotion gate, replays, the report."""
