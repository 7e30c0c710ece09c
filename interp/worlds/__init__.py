"""What a model speaks: the :class:`~interp.worlds.protocol.World` protocol, the toy world
(:mod:`.toy`) and a real tokenizer's world (:mod:`.hf`).
"""
