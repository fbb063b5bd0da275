"""Composition root: Dagster Definitions, resources, sensors, schedules, jobs, and the CLI."""
