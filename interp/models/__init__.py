"""Models on disk and how a reference to one is parsed and loaded: :mod:`.refs` (the typed
reference), :mod:`.checkpoint` (toy checkpoints), :mod:`.real` (real models), :mod:`.lora`.
"""
