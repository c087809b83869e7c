"""
Saving and loading: atomic writes, a JSON description of each model, and loading without unpickling.

- :mod:`.atomic`: write a file so that a crash leaves the old or the new content, never a broken one;
- :mod:`.description`: the JSON description of a TRPO model that each save adds to the zip;
- :mod:`.model_file`: what ``TRPO.save`` does with SB3's archive (add the description, write atomically);
- :mod:`.safe_load`: :func:`~sb3_trpo_plugin.safe_load`, which restores a model from the description
  and the weights alone (also importable as ``sb3_trpo_plugin.safe_load``).

Nothing is imported here, so that ``trpo.py`` can use these modules without an import cycle.
"""
