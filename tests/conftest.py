"""Shared fixtures: a home under tmp_path with one company and one user source."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from context_store.embedding import HashingEmbedder  # noqa: E402
from context_store.store import ContextStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

REFUNDS_V1 = """---
title: Refund policy
---
# Refund policy

We want you to be happy with every Lumora purchase.

## Refund window

You can ask for a refund within 30 days of delivery.

## How to ask

Open Settings, then Orders, and choose Request refund.
"""


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    company = tmp_path / "company"
    users = tmp_path / "users"
    (company / "billing").mkdir(parents=True)
    users.mkdir()
    (company / "refunds.md").write_text(REFUNDS_V1)
    (company / "billing" / "invoices.md").write_text(
        "# Invoices\n\n## Download\n\nInvoices are under Billing, then History, as PDF files.\n"
    )
    (users / "u-1.json").write_text(
        '{"user_id": "u-1", "captured_at": "2026-11-20T10:00:00Z", "account": {"status": "active", "plan": "Plus"},'
        ' "orders": [{"order_id": "A-1", "status": "shipped", "carrier": "DHL"}]}'
    )
    (users / "u-2.json").write_text(
        '{"user_id": "u-2", "captured_at": "2026-11-20T10:00:00Z", "account": {"status": "locked", "plan": "Free"}}'
    )
    return {"company": company, "users": users, "home": tmp_path / "home"}


@pytest.fixture
def store(sources: dict[str, Path]) -> ContextStore:
    return ContextStore.open(
        sources["home"],
        company_sources=[{"name": "company", "path": str(sources["company"])}],
        user_sources=[{"name": "users", "path": str(sources["users"])}],
    )


@pytest.fixture
def fake_embedder() -> HashingEmbedder:
    return HashingEmbedder()
