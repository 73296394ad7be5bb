"""The request path behind the HTTP edge: the `RouterService` facade, planning, streaming, batches,
fan-out, residency, aggregation and metrics. It talks to experts only through `ExpertBackend`.
Must not import Ray, vLLM or torch (those adapters live in `deployments/`).
"""
