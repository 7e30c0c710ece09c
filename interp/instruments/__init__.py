"""interp/instruments"""
