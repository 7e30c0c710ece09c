"""interp/report"""
