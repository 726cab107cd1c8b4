"""The loss-curve comparison of ``fastrms.torch.RMSprop`` with ``torch.optim.RMSprop``: a small
MLP on a fixed noisy regression, its training step, 100-step loss curves and their mean relative
difference, over every combination of torch's options.

Shared by the adapter's tests (tests/test_torch_adapter_*.py) and bench/loss_curve_spread.py,
which measures the spread the tests' bounds cite; neither imports the other. Likewise
``regression_final_loss``, the whole run of tests/test_eight_bit_torch.py and
bench/eight_bit_runs.py. Imported only by them: ``import fastrms.torch`` does not import it.
"""

import copy
import itertools

import numpy as np
import torch

# Every option combination: lr, alpha (0.99: lerp from the average; 0.3: lerp from the grad),
# eps, weight_decay, momentum, centered, maximize.
OPTIONS = [
    dict(lr=lr, alpha=alpha, eps=eps, weight_decay=wd, momentum=mom, centered=c, maximize=mx)
    for lr, alpha, eps, wd, mom, c, mx in itertools.product(
        (5e-3, 1e-3), (0.99, 0.3), (1e-8, 1e-3), (0, 0.1), (0, 0.9), (False, True), (False, True))
]


def option_id(kw):
    """A readable id of an option combination (``lr=0.005-alpha=0.99-...``)."""
    return "-".join(f"{k}={v}" for k, v in kw.items())


def make_mlp(seed=0, dtype=torch.float32, device="cpu"):
    """A 6-16-1 tanh MLP, initialised from ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 1)).to(device=device, dtype=dtype)


# A noisy regression: the loss falls but stays well above zero. (With lr 0.01 and alpha 0.3 the
# steps are nearly sign steps of size lr, and torch's FMAs, one ulp per step, grow into loss
# curves 20% apart: chaos, not a wrong formula. The one-step test is the precise check.)
_GEN = torch.Generator().manual_seed(1)
DATA_X = torch.randn(256, 6, generator=_GEN)
DATA_Y = torch.sin(DATA_X.sum(1, keepdim=True)) + 0.5 * torch.randn(256, 1, generator=_GEN)


def loss_of(model):
    """The mean squared error of ``model`` on the regression, on the model's device and dtype."""
    p = next(model.parameters())
    x = DATA_X.to(device=p.device, dtype=p.dtype)
    return ((model(x) - DATA_Y.to(x)) ** 2).mean()


def train_step(model, opt, set_to_none=True):
    """One training step (``zero_grad``, backward, ``opt.step()``); returns the loss before it."""
    opt.zero_grad(set_to_none=set_to_none)
    loss = loss_of(model)
    loss.backward()
    opt.step()
    return loss.item()


def loss_curve(model, opt, steps=100):
    """The losses of ``steps`` training steps."""
    return np.array([train_step(model, opt) for _ in range(steps)])


def mean_relative_difference(curve, reference):
    """The loss-curve measure: the mean of ``|curve − reference| / |reference|``."""
    return float(np.mean(np.abs(curve - reference) / np.abs(reference)))


def twin(model):
    """A copy of ``model`` with the same values."""
    other = copy.deepcopy(model)
    other.load_state_dict(model.state_dict())
    return other


def regression_final_loss(optimizer, seed=0, steps=400):
    """The final loss of a 8-256-256-1 tanh MLP (from ``torch.manual_seed(seed)``) fitting
    x₀x₁ + sin x₂ on 1,024 fixed points, full batch, ``steps`` steps of ``optimizer(params)``
    under a cosine schedule: the 8-bit state's whole run against float32 state."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(8, 256), torch.nn.Tanh(),
                              torch.nn.Linear(256, 256), torch.nn.Tanh(),
                              torch.nn.Linear(256, 1))
    g = torch.Generator().manual_seed(1)
    X = torch.randn(1024, 8, generator=g)
    y = X[:, :1] * X[:, 1:2] + torch.sin(X[:, 2:3])
    opt = optimizer(net.parameters())
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        ((net(X) - y) ** 2).mean().backward()
        opt.step()
        schedule.step()
    with torch.no_grad():
        return float(((net(X) - y) ** 2).mean())
