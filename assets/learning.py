"""The learning loop as seen from Dagster: staff answers that became knowledge, and those to review."""


import dagster as dg
from sqlmodel import select

from assets.ingestion import company_chunk_index
from assets.metadata import md_table
from assets.resources import StoreResource
from context_store.learn import flag_superseded_answers, learning_metrics, mark_retrievable, write_pending_answer_files
from context_store.store import StaffAnswer

__all__ = ["staff_answer_review", "staff_answers_current"]


@dg.asset(deps=[company_chunk_index], group_name="learning", kinds={"python", "sqlite"})
def staff_answer_review(store: StoreResource) -> dg.MaterializeResult:
    """After each company index: stamp answers that became retrievable, flag those whose sources changed."""
    cs = store.open()
    written = write_pending_answer_files(cs)  # answers stored while their file could not be written
    stamped = mark_retrievable(cs)
    flagged = flag_superseded_answers(cs)
    m = learning_metrics(cs)
    with cs.session() as session:
        review = session.exec(select(StaffAnswer).where(StaffAnswer.needs_review == True)).all()  # noqa: E712
        rows = [[a.doc_id, a.author, a.flagged_at, a.review_reason] for a in review]
    return dg.MaterializeResult(
        metadata={
            "answers": m["answers"],
            "answers_retrievable": m["answers_retrievable"],
            "answers_pending_index": m["answers_pending_index"],
            "answers_flagged_stale": m["answers_flagged_stale"],
            "newly_retrievable": len(stamped),
            "newly_flagged": flagged,
            "files_rewritten": len(written),
            "time_to_knowledge_p50_s": m["time_to_knowledge_p50_s"] if m["time_to_knowledge_p50_s"] is not None else 0.0,
            "time_to_knowledge_p95_s": m["time_to_knowledge_p95_s"] if m["time_to_knowledge_p95_s"] is not None else 0.0,
            "reasked_answered_without_person": m["reasked_answered_without_person"],
            "escalation_rate": m["escalation_rate"] if m["escalation_rate"] is not None else 0.0,
            "open_questions": m["questions_by_status"]["open"],
            "open_questions_by_age": md_table(list(m["open_questions_by_age"]), [list(m["open_questions_by_age"].values())]),
            "answers_to_review": md_table(["document", "author", "flagged", "why"], rows) if rows else dg.MetadataValue.md("_none_"),
        }
    )


@dg.asset_check(asset=staff_answer_review, name="staff_answers_current")
def staff_answers_current(store: StoreResource) -> dg.AssetCheckResult:
    """Warns while any staff answer relies on a document version that has since changed."""
    m = learning_metrics(store.open())
    return dg.AssetCheckResult(
        passed=m["answers_flagged_stale"] == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"answers_flagged_stale": m["answers_flagged_stale"], "answers": m["answers"]},
    )
