"""What measures and never trains: weight-space and gradient alignment (:mod:`.alignment`,
:mod:`.recording`) and SAE features (:mod:`.features`).
"""
