"""SIFT written for visiontk; the user's entry points are ``visiontk.sift``,
``visiontk.iter_sift``, ``visiontk.sift_batch`` and ``visiontk.SiftOptions``.

Where each part lives: :mod:`.options` (the options), :mod:`.api` (one image), :mod:`.batch`
(many images: the scheduler), :mod:`.backends` (who does each step on which device: the xp
definitions, the numba kernels, the CUDA kernels), :mod:`.extraction` (the data flow),
and the steps themselves: :mod:`.scale_space`, :mod:`.detect`, :mod:`.orient`,
:mod:`.describe`, with :mod:`.constants` and their sources.
"""
