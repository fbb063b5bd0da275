"""Step 5: the retriever (current and as-of), dense and text search, fusion, rerank, confidence features."""
