"""The embedded toy world: its grammar (:mod:`.templates`), vocabulary and tokenizer
(:mod:`.world`), pretraining documents (:mod:`.corpus`).
"""
