"""interp/training"""
