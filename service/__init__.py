"""The HTTP retrieval service for agents (FastAPI). Imports the core, never the reverse."""
