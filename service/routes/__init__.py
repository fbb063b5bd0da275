"""The HTTP surfaces, one router per file: retrieval, the red button (hand-off), evidence, outcomes,
operations, the staff webhook, routed questions, review of published answers, and the staff queue page.
``ROUTERS`` is what the app mounts, in order."""

from service.routes.evidence import router as evidence_router
from service.routes.handoff import router as handoff_router
from service.routes.ops import router as ops_router
from service.routes.outcomes import router as outcomes_router
from service.routes.questions import router as questions_router
from service.routes.retrieve import router as retrieve_router
from service.routes.review import router as review_router
from service.routes.staff_page import router as staff_page_router
from service.routes.webhooks import router as webhooks_router

__all__ = ["ROUTERS"]

ROUTERS = [retrieve_router, handoff_router, evidence_router, outcomes_router, ops_router, webhooks_router, questions_router, review_router,
           staff_page_router]
