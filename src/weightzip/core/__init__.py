"""The model-side core every job shares: what a recipe says, which tensors it touches, how a model is changed.

``registry`` (named models, methods, datasets) -> ``recipe`` (validated stages) -> ``select`` (the one
tensor-selection rule) -> ``parametrize`` (the one model-modification mechanism) -> ``pipeline``
(runs a recipe's stages through the registered methods). Imports only ``errors`` from outside.
"""
