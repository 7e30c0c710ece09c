"""The loop's stages in pipeline order: :mod:`.pretrain`, :mod:`.teacher`, :mod:`.generate` (with
:mod:`.lean_forward`), :mod:`.filter`, :mod:`.finetune`, :mod:`.evaluate`. Each runs alone from
the CLI and reuses a finished result.
"""
