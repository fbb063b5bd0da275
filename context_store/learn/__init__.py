"""Step 7 of the data flow: a staff answer becomes knowledge. It is stored first (nothing is
lost) with what staff approved to publish and for whom (``publish``: a canonical question,
paraphrases, global or one user's scope), written as a company document or a fact of that
user, indexed by the ordinary pipeline (``answers``), flagged for review when a source it
relied on changes (``review``), and re-approved or retired by staff (``approval``).
"""

from context_store.learn.answers import (
    answer_applier,
    answer_files,
    index_answers,
    index_user_answers,
    store_answer,
    submit_and_wait,
    submit_answers,
    write_answer_file,
    write_pending_answer_files,
)
from context_store.learn.approval import answer_view, answers_for_review, approve_answer, retire_answer
from context_store.learn.publish import SCOPES, Publication, answer_markdown, suggested_question
from context_store.learn.review import flag_superseded_answers, learning_metrics, mark_retrievable, review_answers

__all__ = [
    "SCOPES",
    "Publication",
    "answer_applier",
    "answer_files",
    "answer_markdown",
    "answer_view",
    "answers_for_review",
    "approve_answer",
    "flag_superseded_answers",
    "index_answers",
    "index_user_answers",
    "learning_metrics",
    "mark_retrievable",
    "retire_answer",
    "review_answers",
    "store_answer",
    "submit_and_wait",
    "submit_answers",
    "suggested_question",
    "write_answer_file",
    "write_pending_answer_files",
]
