"""Routing tables (prompt × expert quality and cost) and their loaders for the shipped formats.
Offline data only: used by fitting, eval and bench, never on the request path.
Must not import serving, the HTTP layer, Ray, vLLM or torch.
"""
