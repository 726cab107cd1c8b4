"""``fastrms.torch.RMSprop``: a drop-in for ``torch.optim.RMSprop`` whose step is one fused call.

Import it explicitly (``from fastrms.torch import RMSprop``); ``import fastrms`` never imports
torch. It is a real ``torch.optim.Optimizer``: param groups, ``zero_grad``, step and state-dict
hooks, ``torch.optim.lr_scheduler`` all work as with torch's. The formula is torch's (convention
"torch" of ``fastrms._spec``: ε outside the root, lerp-form grad average, lr outside the momentum
buffer), and ``state_dict()`` uses torch's layout, so either optimizer loads the other's state.

How each step runs: unflattened, each param group keeps a step plan (``step_plan``): the
pointer tables of its params and state, checked once and reused while nothing changed, so that a
step reads only the grads and makes one backend call per (device, dtype): one compiled Numba call
for the CPU tensors, one CUDA launch for the CUDA ones (zero copy, on torch's current stream).
With ``flatten=True`` the params are re-pointed into one ``FlatBuffer`` per (group, device,
dtype), so that a step is one single-buffer call each. A compiled step goes through the torch
operator ``torch.ops.fastrms.rmsprop_`` (``ops``, ``traced_step``); ``capturable=True`` steps on
CUDA can be captured in a CUDA graph.

What it does with torch's other arguments and inputs, params in other memory formats, state
dicts and copies: docs/training.md; the trainer path (host cost, the operator, ``torch.compile``,
CUDA graphs): docs/trainer-path.md.

The package, one job a module: ``optimizer`` (``RMSprop``: the step routing, the state dicts,
copies), ``step_plan`` (the unflattened step, planned), ``views`` (``_Call``: one ``flatten=True``
call and its step counts), ``flat_group`` and ``flat_group8`` (``flatten=True``), ``param_state`` (a
param's state as torch lays it out, step counters), ``tensors`` (tensors as arrays and flat runs,
the checks on params and grads), ``ops`` (the torch operator), ``traced_step`` (the step as
``torch.compile`` traces it), ``sharded``, ``shards``, ``collectives`` and ``sharded_state``
(``ShardedRMSprop``: ZeRO stage 1 on torch.distributed, docs/sharded.md), ``eight_bit_state``
(``state_bits=8``: docs/eight-bit.md), and ``curves`` (the
loss-curve comparison with torch.optim.RMSprop that the tests and bench/loss_curve_spread.py
share; imported only by them).
"""

from .eight_bit_state import float32_state_dict
from .groups import rule_of
from .optimizer import FORMAT, RMSprop
from .param_state import STATE_BUFFERS
from .sharded import ShardedRMSprop

__all__ = ["FORMAT", "RMSprop", "STATE_BUFFERS", "ShardedRMSprop", "float32_state_dict",
           "rule_of"]
