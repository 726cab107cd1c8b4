"""``fastrms.torch.RMSprop``: a drop-in for ``torch.optim.RMSprop`` whose step is one fused call.

Import it explicitly (``from fastrms.torch import RMSprop``); ``import fastrms`` never imports
torch. It is a real ``torch.optim.Optimizer``: param groups, ``zero_grad``, step and state-dict
hooks, ``torch.optim.lr_scheduler`` all work as with torch's. The formula is torch's (convention
"torch" of ``fastrms._spec``: ε outside the root, lerp-form grad average, lr outside the momentum
buffer), and ``state_dict()`` uses torch's layout, so either optimizer loads the other's state.

How each step runs: every group's tensors go, per (device, dtype), to ``fastrms.functional.apply``
as lists, i.e. one compiled Numba call for all CPU tensors (through NumPy views of their own
memory) and one CuPy launch sequence for the CUDA tensors (zero copy, through
``fastrms.cuda.arrays``). With ``flatten=True`` the params are re-pointed at the beginning into one
``FlatBuffer`` per (group, device, dtype), so that a step is one single-buffer call each.

What it does with torch's other arguments and inputs:

- ``foreach``: accepted (True, False or None) and kept in the param groups, with no effect: there
  is one fused path.
- ``capturable=True``, ``differentiable=True``: ValueError (no CUDA-graph capture, no autograd
  through the step).
- params whose ``.grad`` is None are skipped, as torch skips them (no state, no step count).
- sparse gradients: RuntimeError, as torch's.
- complex params: handled as torch handles them, as real views (re and im updated as two reals;
  the state stays complex, as torch's).
- non-contiguous params (e.g. channels_last): ValueError naming the param, unless
  ``flatten=True``, which copies them into the flat buffer (they become contiguous views).
- on the CPU: float32, float64, complex64, complex128 (TypeError otherwise). Half-precision CUDA
  params keep float32 state (torch keeps it in the param dtype; the numbers differ slightly).
- lr, eps, momentum, weight_decay and alpha: torch's checks, order and messages, before the params
  are read; fastrms also refuses non-finite values and alpha > 1 (torch does not check).
- every update bumps the autograd version counter of the tensors it wrote
  (``torch.autograd.graph.increment_version``), as torch's in-place ops do.

``state_dict()`` adds ``"fastrms": {"format": FORMAT, "flatten": ...}`` at the top level, which
torch ignores; loading accepts torch's own state dicts (no such key), a change of device or dtype
(torch's casting rules) and a change of ``flatten``. ``copy.deepcopy`` and pickling keep
``flatten``, ``backend`` and ``threads``; a copy steps on memory of its own (with ``flatten=True``
it packs its params into new flat buffers).

The package, one job a module: ``optimizer`` (``RMSprop``: the step routing, the state dicts),
``views`` (``_Call``: one ``apply`` and its step counts; ``_TensorViews``: a param's arrays, made
once), ``flat_group`` (``_FlatGroup``: ``flatten=True``), ``param_state`` (a param's state as
torch lays it out, step counters), ``tensors`` (tensors as arrays, the checks on params and
grads), and ``curves`` (the loss-curve comparison with torch.optim.RMSprop that the tests and
bench/loss_curve_spread.py share; imported only by them).
"""

from .optimizer import FORMAT, RMSprop, rule_of
from .param_state import STATE_BUFFERS

__all__ = ["FORMAT", "RMSprop", "STATE_BUFFERS", "rule_of"]
