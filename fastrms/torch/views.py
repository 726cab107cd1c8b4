"""What one ``flatten=True`` step hands to ``fastrms.functional.apply``: a ``_Call`` (the buffers
of one (device, dtype) bucket, as lists or whole flat buffers, then the step counts and version
counters), or with 8-bit state a ``_Call8`` (``eight_bit.apply8``: whole flat buffers, or one
call per param). The unflattened step is planned instead (``fastrms.torch.step_plan``).
"""

import torch

from .._buffers import PLAIN
from ..eight_bit import apply8
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
        self._apply(backend, threads, extras)
        steps, positions = self.step_block, self.step_positions
        increment = 1 if step_increment is None else step_increment.to(steps.device)
        if positions is None or len(positions) == steps.numel():
            steps.add_(increment)
        else:
            steps.index_add_(0, torch.tensor(positions, dtype=torch.long),
                             torch.ones(len(positions), dtype=steps.dtype) * increment)
        torch.autograd.graph.increment_version(self.written)

    def _apply(self, backend, threads, extras):
        params, grads, square_avgs, momentum_buffers, grad_avgs, masters = self.columns
        rule = self.rule
        offsets = self.offsets if isinstance(params, list) else self.offsets[0]
        apply(rule, params, grads, square_avgs,
              momentum_buffers if rule.momentum != 0 else None,
              grad_avgs if rule.centered else None, backend=backend, threads=threads,
              master_param=masters, extras=extras._replace(offsets=offsets))


class _Call8(_Call):
    """A ``_Call`` on 8-bit state: its columns hold ``Codes``; lists are stepped one param per
    ``apply8`` call (there is no multi-tensor 8-bit step)."""

    def _apply(self, backend, threads, extras):
        params, grads, *states, masters = self.columns
        if not isinstance(params, list):
            params, grads, masters = [params], [grads], [masters]
            states = [[s] for s in states]
        for j, offset in enumerate(self.offsets[:len(params)]):
            apply8(self.rule, params[j], grads[j], *(None if s is None else s[j] for s in states),
                   backend=backend, threads=threads,
                   master_param=None if masters is None else masters[j],
                   extras=extras._replace(offsets=offset))
