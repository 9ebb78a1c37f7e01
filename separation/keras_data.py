"""``DataGenerator``: the training patches of data_generator.py as a ``keras.utils.PyDataset``.

Everything is in :class:`data_generator.PatchSampler` (the batches, the augmentations, the
validation patches), which needs NumPy only; this subclass adds Keras' ``PyDataset`` (workers,
multiprocessing: pass ``workers=...`` and they go to its ``__init__``), so that ``model.fit``
takes it. Kept apart because it imports Keras at the top, and ``data_generator.py``'s command
line must not.
"""

from __future__ import annotations

import keras

from data_generator import PatchSampler


class DataGenerator(PatchSampler, keras.utils.PyDataset):
    """The training patches of :class:`data_generator.PatchSampler` as a ``keras.utils.PyDataset``.

    ``DataGenerator(cache, tracks=..., batch_size=16, remix=True, workers=2)``: every argument is
    PatchSampler's (its docstring describes them); ``workers``, ``use_multiprocessing`` and
    ``max_queue_size`` go on to ``PyDataset.__init__``.
    """
