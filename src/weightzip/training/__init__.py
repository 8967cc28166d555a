"""Training: the loop with callbacks (``trainer``), exact resume, data-parallel runs (``distributed``),
and the continual-learning growth study (``continual``). Never imports ``codec`` or ``runtime``."""
