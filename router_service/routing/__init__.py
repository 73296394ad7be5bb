"""Choosing experts: routing strategies (pure functions of one prompt and the fitted state), the prompt
embedder, the versioned artifact, and grading (the one answer normaliser).
Must not import serving, the HTTP layer, Ray, vLLM or torch; strategies raise domain errors only.
"""
