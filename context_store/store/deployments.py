"""Which LanceDB tables serve, and with which model and chunker.

An index is only meaningful together with the model that embedded it and the chunker that
cut it. The first time a home is opened, its configured (model, chunker) is recorded as
the *serving* deployment on the default tables. When the configuration changes later,
``ContextStore`` keeps using the serving deployment — ingest keeps the live tables
consistent, queries keep being encoded with the live model — until ``promotion`` has built
the new index beside it, evaluated it and switched. The configured settings stay
available as ``ContextStore.configured``.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from context_store._common import utcnow
from context_store.settings import ChunkingConfig, Settings
from context_store.store.models import IndexDeployment
from context_store.store.vector_index import COMPANY_TABLE, USER_TABLE

__all__ = ["apply_deployment", "fingerprint_of", "serving_deployment", "table_names_for"]

log = logging.getLogger(__name__)


def fingerprint_of(settings: Settings) -> str:
    return settings.index_code_version()


def table_names_for(fingerprint: str) -> tuple[str, str]:
    """Tables a candidate built for ``fingerprint`` lives in, beside the live ones."""
    return f"{COMPANY_TABLE}__{fingerprint}", f"{USER_TABLE}__{fingerprint}"


def serving_deployment(engine: Engine, settings: Settings) -> IndexDeployment:
    """The serving deployment; the first call for a home records the configured one on the default tables."""
    with Session(engine, expire_on_commit=False) as session:
        serving = session.exec(select(IndexDeployment).where(IndexDeployment.status == "serving")).first()
        if serving is not None:
            return serving
        serving = IndexDeployment(
            fingerprint=fingerprint_of(settings), model=settings.embedding.model, chunking=settings.chunking.model_dump(),
            company_table=COMPANY_TABLE, user_table=USER_TABLE, status="serving", promoted_at=utcnow(),
        )
        session.add(serving)
        try:
            session.commit()
        except IntegrityError:  # another process recorded it first (or a candidate row has this fingerprint)
            session.rollback()
            found = session.exec(select(IndexDeployment).where(IndexDeployment.status == "serving")).first()
            if found is None:
                raise
            return found
        return serving


def apply_deployment(settings: Settings, deployment: IndexDeployment) -> Settings:
    """``settings`` with the deployment's model and chunker (what its tables were built with)."""
    if deployment.model == settings.embedding.model and ChunkingConfig(**deployment.chunking) == settings.chunking:
        return settings
    log.warning(
        "configured index (model %s, chunking %s) is not promoted yet; serving %s (model %s)",
        settings.embedding.model, settings.chunking.fingerprint(), deployment.fingerprint, deployment.model,
    )
    return settings.model_copy(
        update={
            "embedding": settings.embedding.model_copy(update={"model": deployment.model}),
            "chunking": ChunkingConfig(**deployment.chunking),
        }
    )
