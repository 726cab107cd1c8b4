"""``flatten=True`` with ``state_bits=8``: a ``_FlatGroup`` whose state buffers are ``Codes``.

Each param's segment starts on a block of ``quant8.BLOCK`` values, so that its blocks are its own:
its codes and scales are views of the flat ones (``state[p]["square_avg_codes"]`` and
``..._scales``), and the whole-buffer step equals one ``apply8`` per param bit for bit. The
padding holds zeros (and the codes of zero), which the step keeps zero.
"""

import torch

from .. import eight_bit, quant8
from ..eight_bit import Codes, code_keys
from .eight_bit_state import state8_of
from .flat_group import _FlatGroup
from .param_state import MASTER, STATE_BUFFERS
from .views import _Call8


class _FlatGroup8(_FlatGroup):
    """The params of one (group, device, dtype) with 8-bit state, in one block-aligned buffer."""

    make_call = _Call8
    state_of = staticmethod(state8_of)

    def __init__(self, params, optimizer_state):
        super().__init__(params, optimizer_state,
                         align=quant8.BLOCK * params[0].element_size())

    def buffer(self, name):
        """Flat buffer ``name``: ``Codes`` of the whole codes and scales, and each param's."""
        if name == MASTER:
            return super().buffer(name)
        if name not in self.state_buffers:
            whole = Codes(*(torch.from_numpy(a).to(self.flat.data.device)
                            for a in eight_bit.filled((self.flat.size,), 0.0, name)))
            views = [Codes(whole.codes[o:o + n].view(shape),
                           whole.scales[o // quant8.BLOCK:][:quant8.blocks_of(n)])
                     for o, shape, n in zip(self.flat.offsets, self.flat.shapes,
                                            (v.numel() for v in self.flat.views))]
            self.state_buffers[name] = (whole, views)
        return self.state_buffers[name]

    def views_for(self, j, state):
        """Param ``j``'s codes and scales views (and master's) for the buffers ``state`` holds.
        Float buffers under torch's names (a float32 state dict just loaded) are left for
        ``state8_of`` to code at the step."""
        pairs = [pair for name in STATE_BUFFERS if code_keys(name)[0] in state
                 for pair in zip(code_keys(name), self.buffer(name)[1][j])]
        if state.get(MASTER) is not None:
            pairs.append((MASTER, self.buffer(MASTER)[1][j]))
        return pairs

    @staticmethod
    def _tensors(flat):
        return tuple(flat) if isinstance(flat, Codes) else (flat,)

    def _native(self, t, whole=False):
        if isinstance(t, Codes):
            return Codes(*(super(_FlatGroup8, self)._native(x, whole) for x in t))
        return super()._native(t, whole)
