"""The step as ``torch.compile`` traces it: torch's own structure, so that Dynamo treats it as it
treats torch's optimizers. ``RMSprop._init_group`` (which Dynamo runs eagerly, once, guarding on
what it finds) gathers each group's params with a grad and their state, creating it as the eager
step does; then one ``torch.ops.fastrms.rmsprop_`` call per group (opaque to the compiler; inductor
calls it on the buffers in place) and one add to the group's block of step counts (of which each
``state[p]["step"]`` is a view: a per-param ``_foreach_add_`` made a hundred more graph inputs,
each guarded and checked at every call, ~0.35 ms on the 100-tensor model).

A tensor lr is passed as ``lr_tensor``, read at each call: an LR scheduler that writes it does not
recompile the step. A float lr is a constant of the compiled graph, as in torch's optimizers
(a scheduler that changes it recompiles).
"""

import torch

from .param_state import _stepped_states


def init_group(optimizer, group, params, grads, square_avgs, momentum_buffers, grad_avgs, steps):
    """Append group ``group``'s params with a grad, their grads, state buffers and step counts to
    the lists (torch's ``_init_group`` contract); returns whether any param is complex. The step
    counts are made views of the group's step block, as the eager step makes them."""
    has_complex = False
    index = next(i for i, g in enumerate(optimizer.param_groups) if g is group)
    _, step_views = optimizer._step_block(index, group)
    for _, p, state in _stepped_states(optimizer, group, step_views):
        has_complex |= p.is_complex()
        params.append(p)
        grads.append(p.grad)
        square_avgs.append(state["square_avg"])
        if group["momentum"] > 0:
            momentum_buffers.append(state["momentum_buffer"])
        if group["centered"]:
            grad_avgs.append(state["grad_avg"])
        steps.append(state["step"])
    return has_complex


def traced_step(optimizer):
    """One step of every group through the operator (the step ``torch.compile`` traces)."""
    if any(getattr(optimizer, name, None) is not None
           for name in ("grad_scale", "found_inf", "max_grad_norm")) or any(
               (optimizer.master_weights, optimizer.rounding == "stochastic")):
        raise NotImplementedError(
            "fastrms: a compiled step does not yet take master weights, stochastic rounding, "
            "a GradScaler or max_grad_norm; compile the model and step the optimizer eagerly "
            "(docs/mixed-precision.md)")
    for index, group in enumerate(optimizer.param_groups):
        params, grads, square_avgs, momentum_buffers, grad_avgs, steps = [], [], [], [], [], []
        optimizer._init_group(group, params, grads, square_avgs, momentum_buffers, grad_avgs,
                              steps)
        if not params:
            continue
        lr = group["lr"]
        tensor_lr = isinstance(lr, torch.Tensor)
        torch.ops.fastrms.rmsprop_(
            params, grads, square_avgs, momentum_buffers, grad_avgs,
            lr_tensor=lr if tensor_lr else None, convention="torch",
            lr=None if tensor_lr else float(lr), alpha=float(group["alpha"]),
            eps=float(group["eps"]), momentum=float(group["momentum"]),
            centered=bool(group["centered"]), weight_decay=float(group["weight_decay"]),
            maximize=bool(group["maximize"]), backend=optimizer.backend,
            threads=optimizer.threads)
        block = optimizer._step_blocks[index][0]  # one graph input, not one per param
        if len(steps) == len(group["params"]):
            block.add_(1)
        else:
            with_grad = [j for j, p in enumerate(group["params"]) if p.grad is not None]
            block.index_add_(0, torch.tensor(with_grad, device=block.device),
                             torch.ones(len(with_grad), dtype=block.dtype, device=block.device))
