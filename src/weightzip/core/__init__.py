"""The mechanisms every method and job builds on: names, recipes, selection, model modification.

``registry`` (named models, methods, datasets), ``recipe`` (validated stages, YAML/JSON),
``select`` (the one rule for which tensors a stage touches), ``parametrize`` (the one
model-modification mechanism). Imports only ``errors`` and ``primitives`` from the package.
"""
