"""Answering with a model, shared by the record and ablate stages: the batched masked engine
(`engine`), greedy decoding (`decoding`), batch sizing (`batch_memory`) and answer extraction
(`answers`, the paper's Algorithm 1)."""
