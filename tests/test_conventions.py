"""Each convention reproduces its library's published formula, written here as that library does.

The libraries themselves need not be installed: each ``*_formula`` below transcribes the update
from the library's source (per element, in float64), and fastrms's float32 result must agree.
"""

import math

import numpy as np
import pytest

import fastrms

STEPS = 6
G = [[0.5, -1.5, 2.0, 1e-3], [-0.25, 0.75, -2.5, 0.3], [1.0, 1.0, -1.0, -0.2]]


def grad(t):
    return G[t % len(G)]


def keras_formula(x, lr, rho, eps, momentum, centered, wd):
    """keras 3 RMSprop.update_step (+ _apply_weight_decay first)."""
    vel, mom, avg = [0.0] * len(x), [0.0] * len(x), [0.0] * len(x)
    for t in range(STEPS):
        for i, g in enumerate(grad(t)):
            x[i] -= x[i] * wd * lr
            vel[i] = rho * vel[i] + (1 - rho) * g * g
            if centered:
                avg[i] = rho * avg[i] + (1 - rho) * g
                denominator = vel[i] - avg[i] ** 2 + eps
            else:
                denominator = vel[i] + eps
            increment = lr * g / math.sqrt(denominator)
            if momentum > 0:
                mom[i] = momentum * mom[i] + increment
                increment = mom[i]
            x[i] -= increment
    return x


def tf1_formula(x, lr, rho, eps, momentum, centered):
    """TF1 ApplyRMSProp / ApplyCenteredRMSProp: ms starts at 1, lerp form, lr in the momentum."""
    ms, mom, mg = [1.0] * len(x), [0.0] * len(x), [0.0] * len(x)
    for t in range(STEPS):
        for i, g in enumerate(grad(t)):
            ms[i] += (g * g - ms[i]) * (1 - rho)
            denom = ms[i] + eps
            if centered:
                mg[i] += (g - mg[i]) * (1 - rho)
                denom = ms[i] - mg[i] ** 2 + eps
            mom[i] = mom[i] * momentum + lr * g / math.sqrt(denom)
            x[i] -= mom[i]
    return x


def optax_formula(x, lr, decay, eps, momentum, centered, nesterov, bias_correction, eps_in_sqrt):
    """optax.rmsprop: scale_by_rms / scale_by_stddev, scale(-lr), trace(momentum, nesterov)."""
    nu, mu, tr = [0.0] * len(x), [0.0] * len(x), [0.0] * len(x)
    for t in range(STEPS):
        count = t + 1
        for i, g in enumerate(grad(t)):
            nu[i] = decay * nu[i] + (1 - decay) * g**2
            mu[i] = decay * mu[i] + (1 - decay) * g
            nu_hat, mu_hat = nu[i], mu[i]
            if bias_correction:
                nu_hat, mu_hat = nu[i] / (1 - decay**count), mu[i] / (1 - decay**count)
            v = nu_hat - mu_hat**2 if centered else nu_hat
            u = g / math.sqrt(v + eps) if eps_in_sqrt else g / (math.sqrt(v) + eps)
            u = -lr * u
            if momentum:
                tr[i] = u + momentum * tr[i]
                u = u + momentum * tr[i] if nesterov else tr[i]
            x[i] += u
    return x


def paddle_formula(x, lr, rho, eps, momentum, centered, wd):
    """paddle.optimizer.RMSProp with L2Decay regularisation (grad += wd·param)."""
    ms, mg, mom = [0.0] * len(x), [0.0] * len(x), [0.0] * len(x)
    for t in range(STEPS):
        for i, g in enumerate(grad(t)):
            g = g + wd * x[i]
            ms[i] = rho * ms[i] + (1 - rho) * g * g
            if centered:
                mg[i] = rho * mg[i] + (1 - rho) * g
                mom[i] = momentum * mom[i] + lr * g / math.sqrt(ms[i] - mg[i] ** 2 + eps)
            else:
                mom[i] = momentum * mom[i] + lr * g / math.sqrt(ms[i] + eps)
            x[i] -= mom[i]
    return x


def mxnet_formula(x, lr, gamma1, gamma2, eps, centered, wd):
    """MXNet 1.x rmsprop_update / rmspropalex_update (centered: momentum γ2), grad += wd·w."""
    n, gbar, delta = [0.0] * len(x), [0.0] * len(x), [0.0] * len(x)
    for t in range(STEPS):
        for i, g in enumerate(grad(t)):
            g = g + wd * x[i]
            n[i] = (1 - gamma1) * g * g + gamma1 * n[i]
            if centered:
                gbar[i] = (1 - gamma1) * g + gamma1 * gbar[i]
                delta[i] = gamma2 * delta[i] - lr * g / math.sqrt(n[i] - gbar[i] ** 2 + eps)
                x[i] += delta[i]
            else:
                x[i] -= lr * g / math.sqrt(n[i] + eps)
    return x


def run_fastrms(opt):
    x = np.array([0.3, -1.2, 2.5, 0.01], np.float32)
    state = opt.init(x)
    for t in range(STEPS):
        opt.step(x, np.array(grad(t), np.float32), state)
    return x


X0 = [0.3, -1.2, 2.5, 0.01]


def check(opt, expected):
    np.testing.assert_allclose(run_fastrms(opt), expected, rtol=2e-5, atol=1e-6)
    # the transcription is sensitive enough to catch a different formula
    assert not np.allclose(run_fastrms(opt), X0, rtol=1e-4)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_keras(momentum, centered, wd):
    opt = fastrms.RMSprop(convention="keras", lr=0.01, momentum=momentum, centered=centered, weight_decay=wd)
    check(opt, keras_formula(list(X0), 0.01, 0.9, 1e-7, momentum, centered, wd))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centered", [False, True])
def test_tf1(momentum, centered):
    opt = fastrms.RMSprop(convention="tf1", lr=0.01, momentum=momentum, centered=centered)
    check(opt, tf1_formula(list(X0), 0.01, 0.9, 1e-10, momentum, centered))


@pytest.mark.parametrize(
    "momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)]
)
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("bias_correction", [False, True])
@pytest.mark.parametrize("eps_in_sqrt", [True, False])
def test_optax(momentum, nesterov, centered, bias_correction, eps_in_sqrt):
    opt = fastrms.RMSprop(convention="optax", lr=0.01, momentum=momentum, nesterov=nesterov,
                          centered=centered, bias_correction=bias_correction, eps_in_sqrt=eps_in_sqrt)
    check(opt, optax_formula(list(X0), 0.01, 0.9, 1e-8, momentum, centered, nesterov, bias_correction,
                             eps_in_sqrt))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_paddle(momentum, centered, wd):
    opt = fastrms.RMSprop(convention="paddle", lr=0.01, momentum=momentum, centered=centered, weight_decay=wd)
    check(opt, paddle_formula(list(X0), 0.01, 0.95, 1e-6, momentum, centered, wd))


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_mxnet(centered, wd):
    opt = fastrms.RMSprop(convention="mxnet", lr=0.01, centered=centered, weight_decay=wd,
                          momentum=0.9 if centered else 0.0)
    check(opt, mxnet_formula(list(X0), 0.01, 0.95, 0.9, 1e-8, centered, wd))


def test_book_defaults_and_formula():
    opt = fastrms.RMSprop()
    assert (opt.rule.lr, opt.rule.alpha, opt.rule.eps, opt.rule.eps_in_sqrt) == (0.01, 0.9, 1e-6, True)
    x, s = [0.3, -1.2, 2.5, 0.01], [0.0] * 4
    for t in range(STEPS):
        for i, g in enumerate(grad(t)):
            s[i] = 0.9 * s[i] + 0.1 * g * g
            x[i] -= 0.01 * g / math.sqrt(s[i] + 1e-6)
    check(opt, x)


@pytest.mark.parametrize(
    "convention,lr,alpha,eps",
    [("book", 0.01, 0.9, 1e-6), ("torch", 0.01, 0.99, 1e-8), ("keras", 0.001, 0.9, 1e-7)],
)
def test_preset_defaults(convention, lr, alpha, eps):
    rule = fastrms.RMSprop(convention=convention).rule
    assert (rule.lr, rule.alpha, rule.eps) == (lr, alpha, eps)


def test_explicit_arguments_override_defaults_not_flags():
    rule = fastrms.RMSprop(convention="keras", lr=0.01, alpha=0.8).rule
    assert (rule.lr, rule.alpha, rule.eps) == (0.01, 0.8, 1e-7)
    assert rule.decoupled_weight_decay and rule.lr_in_momentum and rule.eps_in_sqrt
    assert fastrms.RMSprop(convention="torch", eps_in_sqrt=False).rule.eps_in_sqrt is False
    with pytest.raises(ValueError, match="eps_in_sqrt"):
        fastrms.RMSprop(convention="torch", eps_in_sqrt=True)
    with pytest.raises(ValueError, match="lr_in_momentum"):
        fastrms.RMSprop(convention="keras", lr_in_momentum=False)
    with pytest.raises(ValueError, match="weight_decay"):
        fastrms.RMSprop(convention="optax", lr=0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match="nesterov"):
        fastrms.RMSprop(convention="torch", nesterov=True)


@pytest.mark.parametrize("convention", ["tf1", "optax", "paddle", "mxnet"])
def test_conventions_without_default_lr_require_it(convention):
    with pytest.raises(ValueError, match="lr"):
        fastrms.RMSprop(convention=convention)
    assert fastrms.RMSprop(convention=convention, lr=0.1).rule.lr == 0.1


def test_tf1_starts_square_avg_at_one():
    state = fastrms.RMSprop(convention="tf1", lr=0.1).init(np.zeros(3, np.float32))
    np.testing.assert_array_equal(state.square_avg, np.ones(3, np.float32))


def test_unknown_convention():
    with pytest.raises(ValueError, match="convention 'adam'"):
        fastrms.RMSprop(convention="adam")


def test_lr_can_change_between_steps():
    opt = fastrms.RMSprop(lr=0.1)
    opt.lr = 0.05
    assert opt.rule.lr == 0.05
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0
    assert opt.rule.lr == 0.05
