"""What the torch adapter's tests (test_torch_adapter_*.py) share: the model, data, training step
and options of ``fastrms.torch.curves`` (bench/loss_curve_spread.py uses them too), the device
fixture, the flatten parametrisation, the state-dict options and torch's own test inputs."""

import pytest

pytest.importorskip("torch")

from conftest import require_torch_cuda  # noqa: E402
from fastrms.torch.curves import (  # noqa: E402,F401 (shared with the test modules)
    OPTIONS, loss_curve, loss_of, make_mlp, mean_relative_difference, option_id, train_step, twin)

# Both ways of stepping: a list of tensors, and flatten=True (one FlatBuffer per group).
flatten_both = pytest.mark.parametrize("flatten", [False, True], ids=["tensors", "flat"])

# The options of the state-dict round trips: every state buffer present.
ROUND_TRIP = dict(lr=5e-3, momentum=0.9, centered=True, weight_decay=0.01)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    """Where the test's model lives: CPU tensors step through Numba, CUDA ones through CuPy."""
    if request.param == "cuda":
        require_torch_cuda()
    return request.param


def torch_optim_info():
    """torch's ``OptimizerInfo`` of RMSprop and the function that expands its configs, from
    ``torch.testing._internal.common_optimizers``: the inputs torch's own optimizer tests
    (test/test_optim.py) run (the test extras pin the torch that ships them).
    """
    from torch.testing._internal import common_optimizers as common

    info = next(o for o in common.optim_db if o.optim_cls.__name__ == "RMSprop")
    return info, common._get_optim_inputs_including_global_cliquey_kwargs
