"""interp/worlds"""
