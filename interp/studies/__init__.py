"""interp/studies"""
