"""The tested single training step (:mod:`.step`), the losses (:mod:`.losses`), optimizers, guard
and resume state (:mod:`.loop`).
"""
