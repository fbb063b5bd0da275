"""Prometheus metrics: request counts and latency per route, results served, decisions, reasons, outcomes.

Each app has its own registry (tests build many apps). With several uvicorn workers set
``PROMETHEUS_MULTIPROC_DIR`` (``freshcontext serve`` does) and ``/metrics`` aggregates all
workers' files.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "MetricsMiddleware"]

_BUCKETS = (0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("freshcontext_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("freshcontext_http_request_seconds", "HTTP request latency", ["method", "route"], buckets=_BUCKETS, registry=self.registry)
        self.results = Counter("freshcontext_results_served_total", "company chunks returned by /v1/retrieve", registry=self.registry)
        self.decisions = Counter("freshcontext_decisions_total", "retrieve decisions", ["decision"], registry=self.registry)
        self.reasons = Counter("freshcontext_escalation_reasons_total", "escalation reasons", ["code"], registry=self.registry)
        self.outcomes = Counter("freshcontext_outcomes_total", "outcomes recorded, by kind and source (platform | derived)",
                                ["outcome", "source"], registry=self.registry)
        self.reviews = Counter("freshcontext_reviews_opened_total", "reviews of failed bot answers opened by an outcome", registry=self.registry)
        self.superseded = Counter("freshcontext_superseded_rows_dropped_total", "index rows dropped because SQL says they are superseded", registry=self.registry)

    def record_response(self, response: Any) -> None:
        """Count what one ``respond()`` served and decided (a ``context_store.route.Response``)."""
        result, decision = response.result, response.decision
        self.results.inc(len(result.results))
        self.decisions.labels(decision.decision).inc()
        self.superseded.inc(result.dropped_superseded)
        for reason in decision.reasons:
            self.reasons.labels(reason.code).inc()
        for outcome in getattr(response, "derived", ()):
            self.record_outcome(outcome)

    def record_outcome(self, outcome: Any) -> None:
        """Count one stored outcome (a ``context_store.route.RecordedOutcome``) and the review it opened."""
        self.outcomes.labels(outcome.outcome, outcome.source).inc()
        if outcome.review_question_id:
            self.reviews.inc()

    def exposition(self) -> bytes:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory and os.path.isdir(directory):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)
            return generate_latest(registry)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware overhead): times every HTTP request by its route template."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status[0])).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
