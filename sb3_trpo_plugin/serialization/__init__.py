"""
Writing model files and checkpoints so that a crash never leaves a broken one, with a JSON description of each model.

- :mod:`.atomic`: write a file so that a crash leaves the old or the new content, never a broken one;
- :mod:`.description`: the JSON description of a model that each save adds to the zip (and its decoding);
- :mod:`.model_file`: what ``TRPO.save`` does with SB3's archive (add the description, write atomically);
- :mod:`.checkpoints`: SB3's ``CheckpointCallback`` writing atomically, and finding the newest complete checkpoint;
- :mod:`.vec_normalize_statistics`: ``VecNormalize`` statistics in a pickle-free ``.npz`` (written next to SB3's ``.pkl``).

This package knows no algorithm: the algorithm imports it to save, and :mod:`sb3_trpo_plugin.loading` reads
what it wrote.
"""
