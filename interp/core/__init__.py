"""interp/core"""
