"""A sink: it reads finished results files and writes text, figures and HTML (:mod:`.page`, one
module per kind of directory, :mod:`.outputs` for the commands). Nothing that computes imports
it.
"""
