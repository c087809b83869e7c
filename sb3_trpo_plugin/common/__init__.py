"""
What the algorithm needs to know about SB3's policies and their data.

- :mod:`.distributions`: SB3 action distributions ↔ their parameters, Fisher matrices and per-state KL;
- :mod:`.parameters`: the actor/critic split of a policy's parameters, found from the autograd graph;
- :mod:`.observations`: selecting rows of a batch of observations (tensors or dicts of tensors);
- :mod:`.reductions`: how statistics of one process's batch become the whole batch's (identity on one process).
"""
