"""The first stage of the two-stage dense search: the best ``pool`` rows of a projected matrix
for a batch of queries, as one ONNX Runtime call.

The stage projects each query (``queries @ projection``), scores it against every row of the
projected snapshot and keeps the top ``pool``. With numpy that was the largest cost of a
request after the model: OpenBLAS multiplies a few queries by a 100,000 x 96 matrix poorly
(one query 2.2 ms, four 15.5 ms on this machine, one thread), and ``argpartition`` adds
~0.3 ms a query, all of it holding the GIL. ONNX Runtime's MatMul and TopK run the same
pass in C++ with the GIL released: 1.6 ms for one query, 2.4 ms for four, 3.9 ms for eight,
top ``pool`` included (measured side by side, ``rows x 96`` float32, one thread). The
projected rows are stored transposed, ``(dims, rows)``, the layout both libraries read fastest.

Which rows come back is decided by the same scores either way; only their order within the
pool differs (the second stage scores the pool exactly and ranks it). Without ``onnx`` the
numpy path answers.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["ProjectedTopK"]

log = logging.getLogger(__name__)


class ProjectedTopK:
    """Top-``pool`` rows by projected score for a batch of queries; built once per snapshot, thread-safe."""

    def __init__(self, projection: np.ndarray, projected_t: np.ndarray) -> None:
        self.projection = np.ascontiguousarray(projection, dtype=np.float32)  # (dim, dims)
        self.projected_t: np.ndarray | None = np.ascontiguousarray(projected_t, dtype=np.float32)  # (dims, rows)
        self.rows = int(projected_t.shape[1])
        self._session: Any = None
        try:
            self._session = _session(self.projection, self.projected_t)
            self.projected_t = None  # the session holds its own copy
        except Exception as exc:  # onnx or onnxruntime missing or refusing: numpy answers the same
            log.warning("dense index first stage: ONNX Runtime unavailable (%s); using numpy", exc)

    @property
    def engine(self) -> str:
        return "onnxruntime" if self._session is not None else "numpy"

    def top(self, queries: np.ndarray, pool: int) -> np.ndarray:
        """Row indices, (queries, min(pool, rows)), unordered within each row of the result."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        pool = min(pool, self.rows)
        if pool >= self.rows:
            return np.tile(np.arange(self.rows, dtype=np.int64), (queries.shape[0], 1))
        if self._session is not None:
            _, rows = self._session.run(None, {"queries": queries, "pool": np.array([pool], dtype=np.int64)})
            return rows
        assert self.projected_t is not None
        rough = (queries @ self.projection) @ self.projected_t  # (queries, rows)
        return np.argpartition(-rough, pool - 1, axis=1)[:, :pool]


def _session(projection: np.ndarray, projected_t: np.ndarray) -> Any:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    dim, dims = projection.shape
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["queries", "projection"], ["projected_queries"]),
            helper.make_node("MatMul", ["projected_queries", "projected_t"], ["scores"]),
            helper.make_node("TopK", ["scores", "pool"], ["values", "rows"], axis=1, largest=1, sorted=0),
        ],
        "first_stage",
        [helper.make_tensor_value_info("queries", TensorProto.FLOAT, ["batch", dim]),
         helper.make_tensor_value_info("pool", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch", "pool"]),
         helper.make_tensor_value_info("rows", TensorProto.INT64, ["batch", "pool"])],
        [numpy_helper.from_array(projection, "projection"), numpy_helper.from_array(projected_t, "projected_t")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    # One thread, as the query encoder: the API's workers already fill the cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
