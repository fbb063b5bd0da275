"""Steps 3-4: chunking, embedding, index planning and writing, drift, lag timelines, the one ingest and the one warm path."""
