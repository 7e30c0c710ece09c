"""Timing, not science: ``interp bench`` (:mod:`.suite`) and the alignment-recording overhead
(:mod:`.recording`).
"""
