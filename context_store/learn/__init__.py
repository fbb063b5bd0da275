"""Step 7 of the data flow: a staff answer becomes knowledge. It is stored first (nothing is
lost), written as a company document linked to its question, indexed by the ordinary
pipeline, and flagged for review when a source it relied on changes.
"""

from context_store.learn.answers import (
    flag_superseded_answers,
    index_answers,
    learning_metrics,
    mark_retrievable,
    store_answer,
    write_answer_file,
    write_pending_answer_files,
)

__all__ = [
    "flag_superseded_answers",
    "index_answers",
    "learning_metrics",
    "mark_retrievable",
    "store_answer",
    "write_answer_file",
    "write_pending_answer_files",
]
