"""No model knowledge: configs (:mod:`.config`), atomic files (:mod:`.io`), intervals and tests
(:mod:`.stats`), worker processes (:mod:`.parallel`).
"""
