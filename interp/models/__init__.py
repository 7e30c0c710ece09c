"""interp/models"""
