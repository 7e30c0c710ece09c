"""interp/bench"""
