"""The in-memory BM25 beside the dense snapshot: analyzer, scores on a hand-computed case, rebuilds."""

from __future__ import annotations

import math

import numpy as np

from context_store.retrieve.text_index import Analyzer, TermIndex


def test_analyzer_folds_stems_and_drops_stop_words_and_long_tokens() -> None:
    a = Analyzer()
    ids = a.terms("How do I cancel my Subscriptions? Cancelling is easy — café " + "x" * 41)
    words = {v: k for k, v in a._term_of_stem.items()}
    assert [words[i] for i in ids] == ["cancel", "subscript", "cancel", "easi", "cafe"]
    # queries never grow the vocabulary, and find stems of words never seen in the corpus
    size = a.vocabulary_size
    assert a.terms("cancelled subscription unknownword", learn=False) == [ids[0], ids[1]]
    assert a.vocabulary_size == size


def test_bm25_scores_match_a_hand_computed_case() -> None:
    texts = ["refund window refund", "refund policy", "shipping times"]
    index = TermIndex(texts, ["a", "b", "c"])
    rows, scores = index.search("refund window", 10)
    k1, b, n = 0.9, 0.4, 3
    lengths = [3, 2, 2]
    avg = sum(lengths) / n

    def part(tf: int, dl: int, df: int) -> float:
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avg))

    expected_a = part(2, 3, 2) + part(1, 3, 1)
    expected_b = part(1, 2, 2)
    assert rows.tolist() == [0, 1]
    assert np.allclose(scores, [expected_a, expected_b], rtol=1e-5)


def test_mask_k_and_empty_queries() -> None:
    index = TermIndex(["alpha beta", "alpha", "beta gamma"], ["1", "2", "3"])
    rows, _ = index.search("alpha", 10, mask=np.array([False, True, True]))
    assert rows.tolist() == [1]
    assert index.search("alpha beta gamma", 1)[0].shape == (1,)
    assert index.search("the of and", 10)[0].size == 0  # only stop words
    assert index.search("zeta", 10)[0].size == 0
    assert TermIndex([], []).search("alpha", 10)[0].size == 0


def test_rebuild_from_previous_equals_a_fresh_build() -> None:
    first = TermIndex(["alpha beta", "beta gamma", "delta"], ["h1", "h2", "h3"])
    texts, keys = ["beta gamma", "delta epsilon", "alpha beta"], ["h2", "h4", "h1"]
    again = TermIndex(texts, keys, previous=first)
    fresh = TermIndex(texts, keys, analyzer=first.analyzer)
    for query in ("alpha", "beta", "epsilon delta", "gamma alpha"):
        r1, s1 = again.search(query, 10)
        r2, s2 = fresh.search(query, 10)
        assert r1.tolist() == r2.tolist() and np.allclose(s1, s2)
    assert set(again._counts) == {"h1", "h2", "h4"}  # rows that left the table are forgotten


def test_scores_cover_every_row_and_a_heading_field_reorders_by_title() -> None:
    from context_store.retrieve.text_index import top_positive

    texts = ["Refunds\nmoney back within 30 days", "Shipping\nrefunds of shipping costs are rare", "Devices\npairing"]
    body = TermIndex(texts, ["a", "b", "c"])
    headings = TermIndex(["Refunds", "Shipping", "Devices"], ["Refunds", "Shipping", "Devices"])
    scores = body.scores("shipping refunds")
    rows, top = body.search("shipping refunds", 10)
    assert scores.shape == (3,) and scores[2] == 0.0 and list(rows) == [1, 0] and top[0] == scores[1]
    boosted = scores + 2.0 * headings.scores("refunds policy")
    assert list(top_positive(boosted, 10)[0]) == [0, 1]
    assert list(top_positive(boosted, 10, mask=np.array([False, True, True]))[0]) == [1]


def test_queries_from_many_threads_stem_as_one_thread_does() -> None:
    """The serving workers' threads analyse queries at once; a snowball stemmer keeps the word it
    works on in itself, so one shared stemmer raised IndexError (a 500) or stemmed wrongly under load."""
    import sys
    import threading

    words = [f"{stem}{suffix}" for stem in ("connect", "relat", "generaliz", "operat", "condition", "argu", "happi")
             for suffix in ("ing", "ation", "ations", "ness", "ed", "ingly", "ives", "ional")]
    reference = Analyzer()
    expected = {w: reference._stem(w) for w in words}
    shared, failures = Analyzer(), []

    def work(offset: int) -> None:
        try:
            for i in range(4000):
                word = words[(i + offset) % len(words)]
                if shared._stem(word) != expected[word]:
                    failures.append(word)
        except Exception as exc:  # the old shared stemmer: IndexError: string index out of range
            failures.append(repr(exc))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as a loaded server does
    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures[:5]


def test_a_query_word_stemmed_before_its_stem_was_learned_finds_it_after() -> None:
    """Query words' stems are kept between queries; a stem a later build learns is found for a word
    stemmed (and missed) before, as an analyzer without the kept stems finds it."""
    a = Analyzer()
    a.terms("billing")
    assert a.terms("cancelled invoices", learn=False) == []  # neither stem is known yet
    a.terms("cancel the invoice")  # a new table version's text
    fresh = Analyzer()
    fresh.terms("billing")
    fresh.terms("cancel the invoice")
    assert a.terms("cancelled invoices", learn=False) == fresh.terms("cancelled invoices", learn=False) != []
