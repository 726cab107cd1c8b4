"""What one ``flatten=True`` step hands to ``fastrms.functional.apply``: a ``_Call`` (the buffers
of one (device, dtype) bucket, as lists or whole flat buffers, then the step counts and version
counters). The unflattened step is planned instead (``fastrms.torch.step_plan``).
"""

import torch

from .._buffers import PLAIN
from ..functional import apply


class _Call:
    """One ``apply`` over lists (or whole flat buffers), then the step counts and versions."""

    def __init__(self, rule, group):
        self.rule, self.group = rule, group
        # param, grad, square_avg, momentum_buffer, grad_avg, master_param
        self.columns = ([], [], [], [], [], None)
        self.offsets = 0  # each param's counter for stochastic rounding (a tuple for lists)
        self.written = []  # tensors whose version counters to bump
        self.step_block = None  # the step counters of the params' group (one tensor)
        self.step_positions = None  # which of them this call counts (None: all)

    def run(self, backend, threads=None, extras=PLAIN, step_increment=None):
        """The update (lists: one multi-tensor call; whole flat buffers: one plain call), with
        ``extras`` (``fastrms._buffers.Extras``); ``step_increment``: see ``GroupPlan.run``."""
        params, grads, square_avgs, momentum_buffers, grad_avgs, masters = self.columns
        rule = self.rule
        offsets = self.offsets if isinstance(params, list) else self.offsets[0]
        apply(rule, params, grads, square_avgs,
              momentum_buffers if rule.momentum != 0 else None,
              grad_avgs if rule.centered else None, backend=backend, threads=threads,
              master_param=masters, extras=extras._replace(offsets=offsets))
        steps, positions = self.step_block, self.step_positions
        increment = 1 if step_increment is None else step_increment.to(steps.device)
        if positions is None or len(positions) == steps.numel():
            steps.add_(increment)
        else:
            steps.index_add_(0, torch.tensor(positions, dtype=torch.long),
                             torch.ones(len(positions), dtype=steps.dtype) * increment)
        torch.autograd.graph.increment_version(self.written)
