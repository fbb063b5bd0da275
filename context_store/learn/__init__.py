"""Step 7 of the data flow: a staff answer becomes knowledge. It is stored first (nothing is
lost), written as a company document linked to its question, indexed by the ordinary
pipeline (``answers``), and flagged for review when a source it relied on changes
(``review``).
"""

from context_store.learn.answers import (
    answer_applier,
    index_answers,
    store_answer,
    submit_and_wait,
    submit_answers,
    write_answer_file,
    write_pending_answer_files,
)
from context_store.learn.review import flag_superseded_answers, learning_metrics, mark_retrievable, review_answers

__all__ = [
    "answer_applier",
    "flag_superseded_answers",
    "index_answers",
    "learning_metrics",
    "mark_retrievable",
    "review_answers",
    "store_answer",
    "submit_and_wait",
    "submit_answers",
    "write_answer_file",
    "write_pending_answer_files",
]
