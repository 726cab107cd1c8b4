"""What one ``flatten=True`` step hands to ``fastrms.functional.apply``: a ``_Call`` (the buffers
of one (device, dtype) bucket, as lists or whole flat buffers, then the step counts and version
counters). The unflattened step is planned instead (``fastrms.torch.step_plan``).
"""

import torch

from ..functional import apply


class _Call:
    """One ``apply`` over lists (or whole flat buffers), then the step counts and versions."""

    def __init__(self, rule, group):
        self.rule, self.group = rule, group
        self.columns = ([], [], [], [], [])  # param, grad, square_avg, momentum_buffer, grad_avg
        self.written = []  # tensors whose version counters to bump
        self.step_block = None  # the step counters of the params' group (one tensor)
        self.step_positions = None  # which of them this call counts (None: all)

    def add(self, arrays, grad):
        """Append one param's buffers (param, square_avg, momentum_buffer, grad_avg) and grad."""
        params, grads, square_avgs, momentum_buffers, grad_avgs = self.columns
        params.append(arrays[0])
        grads.append(grad)
        square_avgs.append(arrays[1])
        momentum_buffers.append(arrays[2])
        grad_avgs.append(arrays[3])

    def run(self, backend, threads=None):
        """The update (lists: one multi-tensor call; whole flat buffers: one plain call)."""
        params, grads, square_avgs, momentum_buffers, grad_avgs = self.columns
        rule = self.rule
        apply(rule, params, grads, square_avgs,
              momentum_buffers if rule.momentum != 0 else None,
              grad_avgs if rule.centered else None, backend=backend, threads=threads)
        steps, positions = self.step_block, self.step_positions
        if positions is None or len(positions) == steps.numel():
            steps.add_(1)
        else:
            steps.index_add_(0, torch.tensor(positions, dtype=torch.long),
                             torch.ones(len(positions), dtype=steps.dtype))
        torch.autograd.graph.increment_version(self.written)
