"""Replay a documentation history into a watched folder and measure freshness end to end.

A history is ``changes.jsonl`` (one commit per line, oldest first:
``{sha, date, subject, changes: [{status, path, old_path, blob}]}``) plus
``blobs.jsonl.gz`` (``{blob, text}``). Replaying writes each commit's files into a real
folder, lets a *driver* (the warm watcher, or the Dagster sensor path) bring a store up to
date, and then judges the store against the ground truth the replay itself holds:

- **lag**: time from the moment the commit's files were written until an outside reader
  of the store sees every one of them current and indexed (deleted ones gone);
- **stale hit**: a retrieved chunk whose version is not the file's current text (or whose
  file is deleted) — judged by content hash against the replay's own copy, not by the
  store's opinion of itself;
- **miss**: a changed document whose current text is not in the top ``k`` for a query
  taken from the lines the commit added;
- **chunks changed**: chunks of the written texts that no earlier text had, computed with
  the same chunker but independently of the store; a store that embeds only what changed
  embeds exactly this many.
- **embedding floor** (:class:`EmbedFloor`): per changed file, the lag it would have if
  indexing did nothing but embed those changed chunks with the same model, file after file,
  cheapest first: what the measured lag is to be compared with.

Drivers live outside the core (they need watchdog and Dagster); this package is the
framework-free part: ``history`` (reading histories, the ground truth, writing commits),
``probes`` (waiting and probing), ``stats`` and ``floor`` (what is counted), ``run`` (the replay).
"""

from context_store.measure.replay.floor import EmbedFloor
from context_store.measure.replay.history import (
    Change,
    Commit,
    FileWrite,
    History,
    ReplayState,
    chunk_hashes,
    chunk_texts,
    iter_commits,
)
from context_store.measure.replay.probes import ProbeOutcome, probe, probe_queries, wait_until_current
from context_store.measure.replay.run import ReplayDriver, copy_embeddings, embedded_since, run_replay, served_state
from context_store.measure.replay.stats import SMALL_COMMIT, DriverStats, rounded_percentile

__all__ = [
    "SMALL_COMMIT",
    "Change",
    "Commit",
    "DriverStats",
    "EmbedFloor",
    "FileWrite",
    "History",
    "ProbeOutcome",
    "ReplayDriver",
    "ReplayState",
    "chunk_hashes",
    "chunk_texts",
    "copy_embeddings",
    "embedded_since",
    "iter_commits",
    "probe",
    "probe_queries",
    "rounded_percentile",
    "run_replay",
    "served_state",
    "wait_until_current",
]
