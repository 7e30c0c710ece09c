"""interp/worlds/toy"""
