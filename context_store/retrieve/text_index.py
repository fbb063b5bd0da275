"""BM25 over the rows of one dense snapshot, in memory, for the API's full-text ranking.

LanceDB's full-text search answers a query over 100k chunks in ~12 ms of CPU, as much as
the whole request may cost at the API's throughput goal (150 requests/s on two cores); a
sparse term-by-row matrix held beside the dense snapshot answers the same query in ~1 ms.
It indexes exactly the rows of the snapshot it belongs to, so both rankers always see the
same table version. The analyzer follows LanceDB's default ``FTS()`` configuration —
lower case, ASCII folding, tokens split on anything not a letter or digit and at most 40
characters, English stop words removed, Snowball English stemming — and the scores are
BM25 (k1=0.9, b=0.4, as BEIR's baselines and ``fusion.bm25_scores``). Scores are not
LanceDB's to the decimal; fusion uses them relative to the most this query could score
(``query_mass``), and the quality of every mode is measured by ``bench/quality.py``.

Rebuilding for a new table version re-analyses only texts it has not seen (by chunk hash).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Sequence

import numpy as np
import snowballstemmer

__all__ = ["Analyzer", "TermIndex", "top_positive"]

_WORD = re.compile(r"[^\W_]+")
# Snowball's English stop words (tantivy's ``Language::English`` list, which LanceDB's
# FTS(remove_stop_words=True) applies); contractions are split by the tokenizer anyway
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but by
can did do does doing don down during each few for from further had has have having he her here hers herself him
himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or other
our ours ourselves out over own s same she should so some such t than that the their theirs them themselves then there
these they this those through to too under until up very was we were what when where which while who whom why will
with you your yours yourself yourselves
""".split())
MAX_TOKEN_CHARS = 40
# Stems of query words the corpus does not hold as such, kept: a word's stem never changes, and
# stemming was ~2 % of a request's time under load (a question's words recur across questions).
_QUERY_STEMS_MAX = 50_000


class Analyzer:
    """Text to term ids; the vocabulary and the stems it has computed are kept between builds."""

    def __init__(self) -> None:
        self._stemmers = threading.local()  # a snowball stemmer keeps its word in itself: one per thread
        self._term_of_word: dict[str, int] = {}  # surface word -> term id (-1: dropped)
        self._term_of_stem: dict[str, int] = {}
        self._query_stems: dict[str, str | None] = {}  # unknown query word -> _index_stem(word)
        self._lock = threading.Lock()

    @property
    def vocabulary_size(self) -> int:
        return len(self._term_of_stem)

    def _stem(self, word: str) -> str:
        stemmer = getattr(self._stemmers, "stemmer", None)
        if stemmer is None:
            stemmer = self._stemmers.stemmer = snowballstemmer.stemmer("english")
        return stemmer.stemWord(word)

    def _index_stem(self, word: str) -> str | None:
        """The stem a word is indexed under; None for a stop word or an over-long token (never indexed)."""
        folded = unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode() or word
        if len(folded) > MAX_TOKEN_CHARS or folded in STOP_WORDS:
            return None
        return self._stem(folded)

    def _query_stem(self, word: str) -> str | None:
        """``_index_stem`` of a query word, kept: the stem, not the term, so a stem a later build learns is found."""
        stems = self._query_stems
        try:
            return stems[word]
        except KeyError:
            pass
        stem = self._index_stem(word)
        if len(stems) >= _QUERY_STEMS_MAX:
            stems.clear()  # bounded; a cleared word is only stemmed again
        stems[word] = stem
        return stem

    def _learn(self, word: str) -> int:
        stem = self._index_stem(word)
        term = -1 if stem is None else self._term_of_stem.setdefault(stem, len(self._term_of_stem))
        self._term_of_word[word] = term
        return term

    def terms(self, text: str, *, learn: bool = True) -> list[int]:
        """Term ids of ``text`` in order; with ``learn=False`` unknown words are left out (queries)."""
        known = self._term_of_word
        out: list[int] = []
        for word in _WORD.findall(text.lower()):
            term = known.get(word)
            if term is None:
                if not learn:
                    stem = self._query_stem(word)
                    term = -1 if stem is None else self._term_of_stem.get(stem, -1)
                else:
                    with self._lock:
                        term = self._learn(word)
            if term >= 0:
                out.append(term)
        return out

    def query_terms(self, text: str) -> tuple[set[int], int]:
        """A query's distinct known term ids, and how many distinct content words it has that no
        indexed text ever held (they count towards what the query asks for, and nothing matches them)."""
        known: set[int] = set()
        unknown: set[str] = set()
        for word in _WORD.findall(text.lower()):
            term = self._term_of_word.get(word)
            if term is None:
                stem = self._query_stem(word)
                if stem is None:
                    continue
                term = self._term_of_stem.get(stem, -1)
                if term < 0:
                    unknown.add(stem)
            if term >= 0:
                known.add(term)
        return known, len(unknown)


class TermIndex:
    """Postings grouped by term: ``rows[indptr[t]:indptr[t+1]]`` hold term ``t`` with BM25 weights (idf applied)."""

    def __init__(
        self,
        texts: Sequence[str],
        keys: Sequence[str],
        *,
        analyzer: Analyzer | None = None,
        previous: "TermIndex | None" = None,
        k1: float = 0.9,
        b: float = 0.4,
    ) -> None:
        self.analyzer = analyzer or (previous.analyzer if previous is not None else Analyzer())
        self.size = len(texts)
        self.k1 = k1
        self.idf = np.zeros(0, dtype=np.float32)  # per term id; a term no row holds is as rare as can be
        seen = previous._counts if previous is not None else {}
        counts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        per_row: list[tuple[np.ndarray, np.ndarray]] = []
        for key, text in zip(keys, texts):
            entry = counts.get(key) or seen.get(key)
            if entry is None:
                tf = Counter(self.analyzer.terms(text))
                entry = (np.fromiter(tf.keys(), dtype=np.int32, count=len(tf)), np.fromiter(tf.values(), dtype=np.float32, count=len(tf)))
            counts[key] = entry
            per_row.append(entry)
        self._counts = counts  # only the current rows' entries: the cache cannot grow past the table
        vocab = self.analyzer.vocabulary_size
        lengths = np.fromiter((len(t) for t, _ in per_row), dtype=np.int64, count=self.size)
        if self.size == 0 or lengths.sum() == 0:
            self.indptr = np.zeros(vocab + 1, dtype=np.int64)
            self.rows = np.zeros(0, dtype=np.int32)
            self.weights = np.zeros(0, dtype=np.float32)
            return
        terms = np.concatenate([t for t, _ in per_row])
        tfs = np.concatenate([f for _, f in per_row])
        rows = np.repeat(np.arange(self.size, dtype=np.int32), lengths)
        doc_len = np.fromiter((f.sum() for _, f in per_row), dtype=np.float32, count=self.size)
        avg = float(doc_len.mean()) or 1.0
        norm = k1 * (1.0 - b + b * doc_len / avg)
        weights = tfs * (k1 + 1.0) / (tfs + norm[rows])
        df = np.bincount(terms, minlength=vocab)
        idf = np.log1p((self.size - df + 0.5) / (df + 0.5)).astype(np.float32)
        self.idf = idf
        order = np.argsort(terms, kind="stable")
        self.rows = rows[order]
        self.weights = (weights * idf[terms])[order].astype(np.float32)
        self.indptr = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)

    def scores(self, query: str) -> np.ndarray:
        """BM25 of ``query`` for every row (0 where no query term occurs)."""
        scores = np.zeros(self.size, dtype=np.float32)
        for t in sorted({t for t in self.analyzer.terms(query, learn=False) if t < len(self.indptr) - 1}):
            lo, hi = self.indptr[t], self.indptr[t + 1]
            scores[self.rows[lo:hi]] += self.weights[lo:hi]  # each row appears once per term, so += is exact
        return scores

    def query_mass(self, query: str) -> float:
        """The most ``query`` could score on any row: ``(k1 + 1) x idf`` summed over its distinct
        content words (a word no row holds at the rarest idf). A row's BM25 over this is the share
        of the query it matches: it does not grow with the query's length or the corpus's size."""
        known, unknown = self.analyzer.query_terms(query)
        rarest = float(np.log1p((self.size + 0.5) / 0.5))
        idf = sum(float(self.idf[t]) if t < len(self.idf) else rarest for t in known) + unknown * rarest
        return (self.k1 + 1.0) * idf

    def search(self, query: str, k: int, *, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows with a positive BM25 score for ``query``, best first, at most ``k``: (rows, scores)."""
        return top_positive(self.scores(query), k, mask=mask)


def top_positive(scores: np.ndarray, k: int, *, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The at most ``k`` rows of ``scores`` above 0 (and in ``mask``), best first: (rows, scores)."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    if mask is not None:
        scores = np.where(mask, scores, 0.0).astype(np.float32)
    hits = np.flatnonzero(scores > 0)
    if hits.shape[0] > k:
        hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
    order = hits[np.argsort(-scores[hits], kind="stable")]
    return order.astype(np.int64), scores[order]
