"""Dagster assets and asset checks. Thin: each one calls ``context_store`` and reports metadata."""
