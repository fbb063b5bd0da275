"""System of record: SQLModel tables, the engine and sessions, LanceDB tables, migrations,
deployments, the run log. No domain rules: the layers above decide what the rows mean.
"""

from context_store._common import as_utc, utcnow
from context_store.store.context_store import ContextStore
from context_store.store.database import (
    SQL_PARAMS,
    downgrade,
    get_engine,
    head_revision,
    in_batches,
    make_engine,
    migrate,
    new_revision,
    schema_drift,
    schema_revision,
)
from context_store.store.models import (
    ChangeEvent,
    Document,
    DocumentVersion,
    RetrievalTrace,
    RoutedQuestion,
    StaffAnswer,
    UserRecord,
    UserSnapshotVersion,
)
from context_store.store.runs import STAGE_FTS, last_runs, track_run
from context_store.store.serving import DeploymentWatch
from context_store.store.staff_sessions import close_staff_session, find_staff_session, open_staff_session
from context_store.store.vector_index import COMPANY_TABLE, USER_TABLE, VectorIndex

__all__ = [
    "COMPANY_TABLE",
    "SQL_PARAMS",
    "STAGE_FTS",
    "USER_TABLE",
    "ChangeEvent",
    "ContextStore",
    "DeploymentWatch",
    "Document",
    "DocumentVersion",
    "RetrievalTrace",
    "RoutedQuestion",
    "StaffAnswer",
    "UserRecord",
    "UserSnapshotVersion",
    "VectorIndex",
    "as_utc",
    "close_staff_session",
    "downgrade",
    "find_staff_session",
    "get_engine",
    "head_revision",
    "in_batches",
    "last_runs",
    "make_engine",
    "migrate",
    "new_revision",
    "open_staff_session",
    "schema_drift",
    "schema_revision",
    "track_run",
    "utcnow",
]
