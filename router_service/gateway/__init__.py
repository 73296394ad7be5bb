"""What a team's gateway adds in front of the router: per-key limits and budgets on a counter store
shared by every router replica (`limits`, `counters`), and a semantic cache of answers
(`semantic_cache`). Must not import Ray, vLLM or torch.
"""
