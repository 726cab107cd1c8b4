"""What one step hands to ``fastrms.functional.apply``: a ``_Call`` (the buffers of one (device,
dtype) bucket, as lists or whole flat buffers, then the step counts and version counters), and
``_TensorViews`` (one param's arrays and its state's, made once and reused every step).
"""

import torch

from ..functional import apply
from .param_state import STATE_BUFFERS
from .tensors import _array_of


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


class _TensorViews:
    """What ``apply`` takes for one param and its state, made once and reused every step.

    NumPy views (CPU) or CuPy arrays (CUDA) over the tensors' own memory, made once: converting
    a tensor costs microseconds, per tensor and step. Valid while the param's memory and the state
    tensors stay the same objects (``current``). Gradients are wrapped afresh every step (kept,
    they would keep torch's ``set_to_none`` from freeing them).
    """

    def __init__(self, p, state, names):
        self.address, self.dtype, self.shape, self.names = p.data_ptr(), p.dtype, p.shape, names
        self.state_tensors = tuple(state[n] for n in names)
        self.tensors = (p,) + self.state_tensors  # what a step writes: their versions are bumped
        self.bucket = (p.device, p.dtype)
        self.host = p.device.type == "cpu"
        by_name = dict(zip(names, self.state_tensors))
        self.arrays = (_array_of(p),) + tuple(
            None if by_name.get(n) is None else _array_of(by_name[n]) for n in STATE_BUFFERS)

    def current(self, p, state, names):
        return (p.data_ptr() == self.address and p.dtype is self.dtype and p.shape == self.shape
                and names == self.names
                and all(state.get(n) is t for n, t in zip(names, self.state_tensors)))

    def grad_of(self, grad):
        """The gradient as ``apply`` takes it (a contiguous copy only if it is not contiguous)."""
        if self.host and grad.is_contiguous() and not grad.requires_grad and not grad.is_complex():
            return grad.numpy()
        return _array_of(grad.contiguous())
