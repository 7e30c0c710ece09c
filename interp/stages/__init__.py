"""interp/stages"""
