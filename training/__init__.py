"""Training, evaluation and export of the default models (never imported by the service).

Retrain both models from ``../shared/data/cxr`` with fixed seeds (2 CPU cores)::

    python -m training all            # prepare + classifier + segmenter + figure + card

or step by step: ``prepare``, ``classifier``, ``segmenter``, ``figure``, ``init-compare``,
``compare``, ``card``, ``refresh-sha``. Full-scale sources in their native layouts can be added
with ``--nih DIR`` (ChestX-ray14) and ``--chexpert DIR`` (CheXpert-v1.0-small,
``--chexpert-uncertain ignore|ones|zeros``). See ``weights/MODEL_CARD.md``.
"""
