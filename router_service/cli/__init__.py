"""`python -m` entry points of the core: fitting routers (`fit`).
Thin argument parsing over the library; no logic of its own. Must not import Ray, vLLM or torch.
"""
