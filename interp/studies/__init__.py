"""What composes stages and instruments into an experiment: :mod:`.run`, :mod:`.sweep`,
:mod:`.theorem`, :mod:`.mnist`. A study writes its results files; the report reads them.
"""
