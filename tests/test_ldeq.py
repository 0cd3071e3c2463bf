"""LDEQ network, released-checkpoint parity, implicit gradients, RwR harness model, checkpoint files."""

import argparse
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from wflwv.models.api import IMAGENET_MEAN, IMAGENET_STD, FrameInfo
from wflwv.models.archs import count_parameters
from wflwv.models.checkpoints import (
    CheckpointError,
    load_arch_checkpoint,
    load_checkpoint,
    load_state_dict_strict,
    make_checkpoint,
    save_checkpoint,
)
from wflwv.models.ldeq import (
    PAPER_CONFIG,
    LDEQConfig,
    LDEQModel,
    LDEQNet,
    heatmaps_to_keypoints,
)
from wflwv.models.registry import create_model

REF = Path(__file__).resolve().parent / "data" / "reference" / "ldeq"

# tiny configurations: network on 64 x 64 inputs, and one the harness can feed (256 x 256 crops, 68 points)
NANO = dict(
    num_landmarks=4, input_size=64, heatmap_size=16, injection_width=8, cell_base_width=8, cell_width_increment=4
)
TINY68 = dict(num_landmarks=68, injection_width=8, cell_base_width=8, cell_width_increment=4)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _make_contractive(net: LDEQNet, factor: float = 0.02) -> None:
    """Shrink the weights that read z in the cell's first convolution, making f(., x) a contraction."""
    with torch.no_grad():
        net.deq_layer.cell.tail.conv.weight[:, : net.config.z_width] *= factor


def _frames(n):
    return [FrameInfo(f"clip{i}", 0, 10, 30.0, np.eye(2, 3)) for i in range(n)]


def _tiny_model(**kw) -> LDEQModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = create_model("ldeq", **{**TINY68, **kw})
    return m


# --------------------------------------------------------------------------------------------------------
# architecture


def test_paper_config_parameter_count_and_keys():
    with torch.device("meta"):
        net = LDEQNet(PAPER_CONFIG)
    assert count_parameters(net) == 16_531_346
    ref = json.loads((REF / "ldeq_paper_config_state_dict_keys.json").read_text())
    mine = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert list(mine) == list(ref)
    assert mine == ref


def test_small_config_keys_match_reference_json():
    _, cfg, _, info = load_arch_checkpoint(REF / "ldeq_small_reference.pth.tar")
    with torch.device("meta"):
        net = LDEQNet(cfg)
    ref = json.loads((REF / "ldeq_small_state_dict_keys.json").read_text())
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == ref
    assert info["format"] == "released" and info["args"]["injection_width"] == 32


def test_config_validation_and_overrides():
    with pytest.raises(ValueError, match="heatmap_size"):
        LDEQConfig(input_size=256, heatmap_size=32)
    with pytest.raises(ValueError, match="grad_mode"):
        LDEQConfig(grad_mode="backprop")
    with pytest.raises(TypeError, match="injection_widht"):
        LDEQConfig().with_overrides(injection_widht=3)
    with pytest.raises(TypeError, match="injection_widht"):
        create_model("ldeq", injection_widht=8)
    c = LDEQConfig(**NANO)
    assert LDEQConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown"):
        LDEQConfig.from_dict({**c.to_dict(), "colour": 1})


def test_released_args_translation():
    args = argparse.Namespace(
        model_mode="implicit",
        cell_name="Cell0",
        injection_width=32,
        cell_base_width=32,
        cell_width_increment=8,
        cell_gn_groups=1,
        cell_norm="softargmax",
        cell_softargmax_beta=0.4,
        cell_learn_softargmax_beta=False,
        solver="anderson",
        stop_mode="rel",
        abs_diff_target=0.0,
        rel_diff_target=1e-3,
        max_iters=5,
        anderson_m=6,
        anderson_lam=1e-4,
        anderson_beta=1.0,
        JFB=True,
        im_size=256,
        n_keypoints=98,
        cell_extra_latent_width=0,
        input_channels=3,
        heatmap_size=64,
        z_width=98,
        z0_mode="zeros",
    )
    cfg = LDEQConfig.from_released_args(args)
    # the released counting is kept: the same max_iters, and f applied once more after the solver
    assert cfg.solver == "anderson" and cfg.max_iters == 5 and cfg.tol_rel == 1e-3 and cfg.grad_mode == "jfb"
    assert cfg.final_eval and not cfg.early_exit and cfg.rwr_max_iters == 1
    args.solver = "fpi"
    args.take_one_less_inference_step = True
    cfg = LDEQConfig.from_released_args(args)
    assert cfg.max_iters == 5 and not cfg.final_eval
    args.stochastic_max_iters = True  # the released evaluation halves the cap (Python rounding)
    assert LDEQConfig.from_released_args(args).max_iters == 2
    args.max_iters = 7
    assert LDEQConfig.from_released_args(args).max_iters == 4
    args.max_iters = 1
    assert LDEQConfig.from_released_args(args).max_iters == 1
    args.model_mode = "explicit"
    with pytest.raises(ValueError, match="explicit"):
        LDEQConfig.from_released_args(args)


def test_config_of_wflwv_0_1_evaluates_as_it_did():
    # wflwv 0.1 counted cell evaluations including the output's and stopped at the first iterate meeting the
    # tolerance; such a config (it has rwr_iters) is translated to today's fields
    old = {**LDEQConfig(**NANO).to_dict(), "solver": "anderson", "max_iters": 6, "backward_max_iters": 4}
    old.pop("rwr_max_iters"), old.pop("early_exit"), old.pop("final_eval")
    old["rwr_iters"] = 2
    cfg = LDEQConfig.from_dict(old)
    assert (cfg.max_iters, cfg.backward_max_iters, cfg.rwr_max_iters, cfg.early_exit) == (4, 2, 1, True)
    cfg = LDEQConfig.from_dict({**old, "solver": "fpi", "max_iters": 1})
    assert (cfg.max_iters, cfg.early_exit) == (1, True)
    # the shipped demo model was saved by wflwv 0.1 and loads this way
    m = create_model("ldeq")
    assert m.cfg.early_exit and m.cfg.max_iters == 4 and m.config()["label_tags"] == ["early exit"]


def test_final_eval_false_outputs_the_answer_itself():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for solver in ("fpi", "anderson"):
            net = LDEQNet(LDEQConfig(**NANO, solver=solver, max_iters=3, tol_rel=0.0)).eval()
            out = net(x)
            net.config = net.config.with_overrides(final_eval=False)
            less = net(x)
            assert torch.equal(less["heatmaps"], less["z_solver"])
            assert torch.allclose(out["z_solver"], less["z_solver"])
            assert (less["cell_evals"] == out["cell_evals"] - int(solver == "fpi")).all()


def test_heatmaps_to_keypoints_units():
    h = torch.zeros(1, 2, 8, 8)
    h[0, 0, 2, 5] = 1.0  # row 2, column 5
    h[0, 1, 0, 0] = 1.0
    h[0, 1, 0, 2] = 1.0
    out = heatmaps_to_keypoints(h, eps=0.0)
    assert torch.allclose(out["keypoints"][0, 0], torch.tensor([5 / 8, 2 / 8]))
    assert torch.allclose(out["keypoints"][0, 1], torch.tensor([1 / 8, 0.0]))
    assert torch.allclose(out["std"][0], torch.tensor([0.0, math.sqrt(0.5 * 1.0) / 8]))


# --------------------------------------------------------------------------------------------------------
# parity with the released implementation's stored outputs


@pytest.fixture(scope="module")
def ref_net():
    _, cfg, sd, _ = load_arch_checkpoint(REF / "ldeq_small_reference.pth.tar")
    net = LDEQNet(cfg)
    load_state_dict_strict(net, sd)
    # float64: the stored float32 outputs carry ~6e-5 of their own rounding error after 4 iterations and float32
    # results here vary by ~1e-4 with the thread count; in float64 the comparison is deterministic
    net.eval().double()
    io = dict(np.load(REF / "ldeq_small_reference_io.npz"))
    return net, io


@pytest.mark.slow
def test_reference_stem_cell_fpi_anderson_rwr(ref_net):
    net, io = ref_net
    cfg = net.config
    # the checkpoint's args: fpi, 3 solver iterations + 1 final evaluation = 4 cell evaluations, tolerance 0
    assert (cfg.solver, cfg.max_iters, cfg.tol_rel) == ("fpi", 3, 0.0)
    x = torch.from_numpy(io["images"]).double()
    with torch.no_grad():
        feats = net.features(x)
        np.testing.assert_allclose(feats[0].numpy(), io["tail_features_sample0"], atol=1e-4)
        f0 = net.cell(net.zeros(2), feats)
        np.testing.assert_allclose(f0[0].numpy(), io["cell_from_zero_sample0"], atol=1e-4)
        fpi = net(x)
        assert fpi["cell_evals"].tolist() == [4, 4]
        np.testing.assert_allclose(fpi["keypoints"].numpy(), io["fpi_keypoints"], atol=1e-4)
        np.testing.assert_allclose(fpi["uncertainty"].numpy(), io["fpi_uncertainty"], atol=1e-4)
        np.testing.assert_allclose(fpi["z_star"][0].numpy(), io["fpi_z_star_sample0"], atol=1e-4)
        # released anderson with max_iters 5 evaluates 2 + 5 iterates (the final evaluation is the best one's)
        an = net(x, solver="anderson", max_iters=5)
        assert an["cell_evals"].tolist() == [7, 7] and an["solver_iters"].tolist() == [5, 5]
        np.testing.assert_allclose(an["keypoints"].numpy(), io["anderson_keypoints"], atol=1e-4)
        np.testing.assert_allclose(an["uncertainty"].numpy(), io["anderson_uncertainty"], atol=1e-4)
        rwr = net(x, z0=fpi["z_star"], max_iters=1)
        assert rwr["cell_evals"].tolist() == [2, 2]
        np.testing.assert_allclose(rwr["keypoints"].numpy(), io["rwr_fpi1_keypoints"], atol=1e-4)
        # the output heatmaps are f(z_solver): reusing the solver's evaluation equals evaluating again
        again = net.cell(an["z_solver"], feats)
        assert torch.allclose(again, an["heatmaps"], atol=1e-5)


def test_reference_through_the_harness_model(ref_net):
    _, io = ref_net
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    images01 = torch.from_numpy(io["images"]) * std + mean  # predict() re-applies the normalisation
    weights = str(REF / "ldeq_small_reference.pth.tar")
    # rwr_full_first_frame (not released): the first frame gets the checkpoint's full solve
    m = create_model("ldeq", weights=weights, rwr=True, rwr_full_first_frame=True)
    assert m.scheme == "wflw98" and m.config()["label_tags"] == ["full first frame"]
    first = m.predict(images01, [None, None], _frames(2))
    np.testing.assert_allclose(first.landmarks_numpy() / 256, io["fpi_keypoints"], atol=1e-4)
    second = m.predict(images01, first.states, _frames(2))
    np.testing.assert_allclose(second.landmarks_numpy() / 256, io["rwr_fpi1_keypoints"], atol=1e-4)
    assert second.stats_numpy()["cell_evals"].tolist() == [2, 2]
    assert first.stats_numpy()["cell_evals"].tolist() == [4, 4]
    # released: the first frame, too, gets rwr_max_iters = 1 iteration (from zeros) and f once more
    released = create_model("ldeq", weights=weights, rwr=True)
    assert released.config()["label_tags"] == []
    first = released.predict(images01, [None, None], _frames(2))
    assert first.stats_numpy()["cell_evals"].tolist() == [2, 2]
    with torch.no_grad():
        two = released.net(torch.from_numpy(io["images"]), max_iters=1)
    np.testing.assert_allclose(first.landmarks_numpy(), two["keypoints"].numpy() * 256, atol=2e-3)


# --------------------------------------------------------------------------------------------------------
# training: gradients and memory


def _grads(net, x, w, mode, **kw):
    net.zero_grad()
    out = net(x, differentiable=True, grad_mode=mode, **kw)
    (out["keypoints"] * w).sum().backward()
    return torch.cat([p.grad.flatten() for p in net.parameters()]), out


def test_implicit_gradient_matches_unrolled_on_contractive_cell():
    torch.manual_seed(0)
    net = LDEQNet(LDEQConfig(**NANO, solver="anderson", max_iters=60, tol_rel=1e-10)).double()
    _make_contractive(net)
    net.eval()  # BatchNorm with running statistics: the same function in every call
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    w = torch.randn(2, 4, 2, dtype=torch.float64)
    g_imp, out = _grads(net, x, w, "implicit")
    assert out["converged"].all() and out["keypoints"].requires_grad
    assert net.last_backward_stats is not None and net.last_backward_stats.converged.all()
    g_unr, _ = _grads(net, x, w, "unrolled", tol_rel=0.0)
    g_jfb, _ = _grads(net, x, w, "jfb")
    err_imp = ((g_imp - g_unr).norm() / g_unr.norm()).item()
    err_jfb = ((g_jfb - g_unr).norm() / g_unr.norm()).item()
    assert err_imp < 1e-6, err_imp
    assert err_jfb > 100 * err_imp  # the one-step gradient is an approximation; the comparison can tell them apart


def test_implicit_gradient_matches_finite_differences_of_input():
    torch.manual_seed(1)
    net = LDEQNet(LDEQConfig(**NANO, solver="fpi", max_iters=80, tol_rel=1e-12)).double()
    _make_contractive(net)
    net.eval()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 4, 2, dtype=torch.float64)
    out = net(x, differentiable=True, grad_mode="implicit")
    (out["keypoints"] * w).sum().backward()
    d = torch.randn_like(x)
    eps = 1e-5
    with torch.no_grad():
        lp = (net(x + eps * d)["keypoints"] * w).sum()
        lm = (net(x - eps * d)["keypoints"] * w).sum()
    fd = (lp - lm) / (2 * eps)
    assert abs(fd.item() - (x.grad * d).sum().item()) < 1e-6 * max(1.0, abs(fd.item()))


def test_training_memory_does_not_grow_with_iterations_for_implicit():
    torch.manual_seed(0)
    net = LDEQNet(LDEQConfig(**NANO, solver="fpi", tol_rel=0.0)).train()
    x = torch.randn(2, 3, 64, 64)

    def saved_bytes(mode, iters):
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = net(x, max_iters=iters, grad_mode=mode)
            out["keypoints"].sum().backward()
        assert out["solver_iters"].tolist() == [iters, iters]
        return sum(seen.values())

    implicit = saved_bytes("implicit", 2)
    assert saved_bytes("implicit", 8) == implicit
    assert saved_bytes("jfb", 2) == saved_bytes("jfb", 8)
    u2, u4, u8 = (saved_bytes("unrolled", k) for k in (2, 4, 8))
    assert u8 - u4 == 2 * (u4 - u2) > 0  # one cell graph per iteration
    assert u8 > 2 * implicit


def test_training_forward_contract():
    torch.manual_seed(0)
    net = LDEQNet(LDEQConfig(**NANO, max_iters=3)).train()
    x = torch.randn(3, 3, 64, 64)
    out = net(x)
    assert out["keypoints"].shape == (3, 4, 2) and out["keypoints"].requires_grad
    # anderson, 3 iterations: x0, f(x0), 3 mixed iterates, then the tracked evaluation at the answer
    assert out["cell_evals"].tolist() == [6, 6, 6] and out["solver_iters"].tolist() == [3, 3, 3]
    torch.nn.functional.mse_loss(out["keypoints"], torch.rand(3, 4, 2)).backward()
    assert net.tail[0].conv.weight.grad is not None and net.deq_layer.cell.head.conv.weight.grad is not None
    with torch.no_grad():
        ev = net.eval()(x)  # inference reuses the answer's f-value
    assert not ev["keypoints"].requires_grad and ev["cell_evals"].tolist() == [5, 5, 5]
    # fpi: 3 iterations then f once more, tracked in training, the solver's own final evaluation in inference
    net = LDEQNet(LDEQConfig(**NANO, max_iters=3, solver="fpi", tol_rel=0.0)).train()
    assert net(x)["cell_evals"].tolist() == [4, 4, 4]
    assert net(x, grad_mode="unrolled")["cell_evals"].tolist() == [4, 4, 4]
    with torch.no_grad():
        assert net.eval()(x)["cell_evals"].tolist() == [4, 4, 4]


# --------------------------------------------------------------------------------------------------------
# the harness model: per-sample results and RwR


def _two_images():
    g = torch.Generator().manual_seed(1)
    imgs = torch.rand(2, 3, 256, 256, generator=g)
    imgs[1] = imgs[1] * 0.5 + 0.5
    return imgs


def test_batch_equals_one_at_a_time_with_per_sample_stopping():
    torch.manual_seed(0)
    m = _tiny_model(
        solver="anderson",
        max_iters=30,
        tol=1e-4,
        rwr=True,
        rwr_full_first_frame=True,
        rwr_max_iters=3,
        sequential=False,
    )
    assert m.config()["label_tags"] == ["full first frame", "batched"]
    _make_contractive(m.net)
    imgs = _two_images()
    both = m.predict(imgs, [None, None], _frames(2))
    it = both.stats_numpy()["solver_iters"]
    assert it[0] != it[1], "the two images should converge after different numbers of iterations"
    for i in range(2):
        one = m.predict(imgs[i : i + 1], [None], _frames(1))
        np.testing.assert_allclose(one.landmarks_numpy()[0], both.landmarks_numpy()[i], atol=1e-3)
        assert one.stats_numpy()["solver_iters"][0] == it[i]
    # mixed batch: one clip at its first frame, one warm-started
    mixed = m.predict(imgs, [None, both.states[1]], _frames(2))
    warm = m.predict(imgs[1:], [both.states[1]], _frames(1))
    cold = m.predict(imgs[:1], [None], _frames(1))
    np.testing.assert_allclose(mixed.landmarks_numpy()[1], warm.landmarks_numpy()[0], atol=1e-3)
    np.testing.assert_allclose(mixed.landmarks_numpy()[0], cold.landmarks_numpy()[0], atol=1e-3)
    evals = both.stats_numpy()["cell_evals"]
    assert (evals == it + 2).all()  # anderson: x0, f(x0), one mixed iterate per iteration
    assert mixed.stats_numpy()["cell_evals"].tolist() == [evals[0], warm.stats_numpy()["cell_evals"][0]]


def test_sequential_mode_is_bitwise_independent_of_the_batch_and_threads():
    torch.manual_seed(0)
    m = _tiny_model(solver="fpi", max_iters=4, tol=0.3, rwr=True)
    assert m.sequential and m.config()["sequential"] is True
    imgs = torch.rand(3, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    torch.set_num_threads(2)  # the fixture restores the count afterwards
    both = m.predict(imgs, [None] * 3, _frames(3))
    assert torch.get_num_threads() == 2  # the model ran on one thread and gave the count back
    torch.set_num_threads(1)
    for i in range(3):
        one = m.predict(imgs[i : i + 1], [None], _frames(1))
        assert np.array_equal(one.landmarks_numpy()[0], both.landmarks_numpy()[i])
        assert torch.equal(one.states[0], both.states[i])
    batched = _tiny_model(solver="fpi", max_iters=4, tol=0.3, rwr=True, sequential=False)
    batched.net.load_state_dict(m.net.state_dict())
    np.testing.assert_allclose(
        batched.predict(imgs, [None] * 3, _frames(3)).landmarks_numpy(), both.landmarks_numpy(), atol=1e-3
    )


# models wide enough for the convolution split (output channels >= 2 x 16), still quick
WIDE68 = dict(num_landmarks=68, injection_width=32, cell_base_width=32, cell_width_increment=16)


def _clip_predictions(m, imgs, frames=3):
    """Predict ``frames`` frames of len(imgs) clips (each frame a little darker), carrying the states."""
    states, lms, heat = [None] * len(imgs), [], []
    for t in range(frames):
        out = m.predict(imgs * (1 - 0.05 * t), states, _frames(len(imgs)))
        states = out.states
        lms.append(out.landmarks_numpy())
        heat.append(torch.stack(out.states))
    return np.stack(lms), torch.stack(heat)


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_threads_give_exactly_the_numbers_of_one_sample_after_another(batch, monkeypatch):
    import wflwv.models.parallel as parallel

    torch.manual_seed(0)
    imgs = torch.rand(batch, 3, 256, 256, generator=torch.Generator().manual_seed(batch))
    ref = _tiny_model(**WIDE68, solver="anderson", max_iters=3, tol=1e-3, rwr=True, threads=1)
    want_lm, want_heat = _clip_predictions(ref, imgs)
    calls = []
    run_tasks = parallel.run_tasks
    monkeypatch.setattr(parallel, "MIN_SLICE_MACS", 1)  # split every convolution a batch of one has
    monkeypatch.setattr(
        parallel, "run_tasks", lambda tasks, threads: calls.append(len(tasks)) or run_tasks(tasks, threads)
    )
    import wflwv.models.ldeq.model as model_module

    monkeypatch.setattr(model_module, "run_tasks", parallel.run_tasks)
    for threads in (2, 3):
        m = _tiny_model(**WIDE68, solver="anderson", max_iters=3, tol=1e-3, rwr=True, threads=threads)
        m.net.load_state_dict(ref.net.state_dict())
        calls.clear()
        lm, heat = _clip_predictions(m, imgs)
        assert calls, "the work was not spread over threads"
        if batch == 1:
            assert max(calls) >= 2  # a convolution was split by output channels
        else:
            assert calls == [batch] * 3  # one task per sample, every frame
        assert np.array_equal(lm, want_lm) and torch.equal(heat, want_heat), f"threads={threads} changed the numbers"
        assert torch.get_num_threads() == 1  # the caller's count (the fixture's) is given back


def test_convolution_slices_are_the_whole_convolution():
    from wflwv.models.parallel import convolution_splitter, one_thread

    g = torch.Generator().manual_seed(0)
    split = convolution_splitter(threads=3, min_slice_macs=1)
    for c_in, c_out, k, stride, size in [(40, 64, 3, 1, 16), (64, 48, 1, 1, 16), (3, 32, 7, 2, 32), (24, 80, 5, 1, 8)]:
        conv = torch.nn.Conv2d(c_in, c_out, k, stride=stride, padding=(k - 1) // 2)
        x = torch.randn(1, c_in, size, size, generator=g)
        act = torch.nn.LeakyReLU(0.01)
        with torch.no_grad(), one_thread():
            assert torch.equal(split(conv, x, act), act(conv(x))), (c_in, c_out, k)


def test_small_convolutions_are_left_to_the_caller():
    from wflwv.models.parallel import convolution_splitter

    conv = torch.nn.Conv2d(32, 32, 3, padding=1)
    x = torch.randn(1, 32, 8, 8)
    assert convolution_splitter(threads=2)(conv, x, torch.nn.Identity()) is None  # 590k MACs: not worth a thread
    assert convolution_splitter(threads=2, min_slice_macs=1)(conv, x, torch.nn.Identity()) is not None


def test_spread_over_keeps_the_caller_on_one_thread_and_tells_the_budget():
    from wflwv.models.parallel import cpu_threads, spread_over

    before = torch.get_num_threads()
    assert cpu_threads() == before
    with spread_over(3):
        assert torch.get_num_threads() == 1 and cpu_threads() == 3
        with spread_over(1):
            assert cpu_threads() == 1
        assert cpu_threads() == 3
    assert torch.get_num_threads() == before and cpu_threads() == before


def test_ldeq_takes_its_threads_from_spread_over(monkeypatch):
    import wflwv.models.ldeq.model as model_module

    seen = []
    real = model_module.run_tasks
    monkeypatch.setattr(model_module, "run_tasks", lambda tasks, threads: seen.append(threads) or real(tasks, threads))
    m = _tiny_model(**WIDE68, solver="anderson", max_iters=2, tol=1e-3)
    imgs = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    from wflwv.models.parallel import spread_over

    with spread_over(3):
        m.predict(imgs, [None, None], [None, None])
    assert seen == [3]


def test_run_tasks_order_errors_and_modes():
    from wflwv.models.parallel import one_thread, run_tasks

    with one_thread():
        assert run_tasks([lambda i=i: i * i for i in range(7)], threads=3) == [i * i for i in range(7)]

        def boom():
            raise RuntimeError("task failed")

        with pytest.raises(RuntimeError, match="task failed"):
            run_tasks([lambda: 1, boom, lambda: 2], threads=2)
        with torch.inference_mode():  # grad / inference modes are thread-local: the helpers get the caller's
            flags = run_tasks([lambda: (torch.is_inference_mode_enabled(), torch.get_num_threads())] * 4, threads=2)
        assert flags == [(True, 1)] * 4


def test_predict_under_bf16_autocast_keeps_the_solver_in_float32():
    torch.manual_seed(0)
    imgs = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(4))
    for threads in (1, 2):
        m = _tiny_model(solver="anderson", max_iters=3, rwr=True, threads=threads)
        fp32 = m.predict(imgs, [None, None], _frames(2))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m.predict(imgs, [None, None], _frames(2))
            low2 = m.predict(imgs, low.states, _frames(2))
        assert low.states[0].dtype == torch.float32 and low2.stats["residual"].dtype == torch.float32
        assert np.isfinite(low2.landmarks_numpy()).all()
        assert np.abs(low.landmarks_numpy() - fp32.landmarks_numpy()).max() < 20  # bf16: close, not equal
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.net(torch.randn(1, 3, 256, 256), max_iters=2, differentiable=False)
    assert out["z_solver"].dtype == torch.float32 and out["solver_stats"].abs_trace.dtype == torch.float32


def test_stateful_only_with_rwr_and_threads_validated():
    assert _tiny_model(rwr=True).stateful and not _tiny_model(rwr=False).stateful
    with pytest.raises(ValueError, match="threads"):
        _tiny_model(threads=0)


def test_rwr_on_identical_frames_runs_the_released_budget_unless_early_exit():
    torch.manual_seed(0)
    imgs = _two_images()
    for early in (False, True):
        m = _tiny_model(
            solver="anderson", max_iters=30, tol=1e-4, rwr=True, rwr_full_first_frame=True, early_exit=early
        )
        _make_contractive(m.net)
        first = m.predict(imgs, [None, None], _frames(2))
        assert (first.stats_numpy()["residual"] < 1e-4).all()
        second = m.predict(imgs, first.states, _frames(2))
        # released: x0, f(x0) and one mixed iterate whatever the warm start; early exit: the warm start already
        # meets the tolerance, one evaluation (adaptive compute)
        assert second.stats_numpy()["cell_evals"].tolist() == ([1, 1] if early else [3, 3])
        assert m.config()["early_exit"] is early and ("early exit" in m.config()["label_tags"]) is early
        np.testing.assert_allclose(second.landmarks_numpy(), first.landmarks_numpy(), atol=0.02)
        for s1, s2 in zip(first.states, second.states):
            assert ((s2 - s1).norm() / s1.norm()).item() < 1e-3


def test_rwr_caps_cell_evaluations_below_a_full_solve():
    torch.manual_seed(0)
    imgs = _two_images()
    full = _tiny_model(solver="fpi", max_iters=8, tol=1e-6, rwr=False)
    rwr = _tiny_model(solver="fpi", max_iters=8, tol=1e-6, rwr=True, rwr_full_first_frame=True)
    rwr.net.load_state_dict(full.net.state_dict())
    a1 = full.predict(imgs, [None, None], _frames(2))
    a2 = full.predict(imgs, a1.states, _frames(2))  # without rwr the states are ignored
    np.testing.assert_allclose(a2.landmarks_numpy(), a1.landmarks_numpy(), atol=1e-4)
    b1 = rwr.predict(imgs, [None, None], _frames(2))
    np.testing.assert_allclose(b1.landmarks_numpy(), a1.landmarks_numpy(), atol=1e-4)  # first frame: full solve
    b2 = rwr.predict(imgs * 0.9, b1.states, _frames(2))
    assert (a2.stats_numpy()["cell_evals"] == 9).all()  # 8 iterations + f once more
    assert (b2.stats_numpy()["cell_evals"] == 2).all()  # rwr_max_iters = 1: 1 iteration + f once more
    # and it really is warm-started: the same 2 evaluations from zeros give something else
    cold2 = rwr.net(rwr_norm(imgs * 0.9), max_iters=1)
    assert not np.allclose(cold2["keypoints"].detach().numpy() * 256, b2.landmarks_numpy(), atol=1e-2)


def rwr_norm(images):
    from wflwv.models.api import imagenet_normalise

    return imagenet_normalise(images)


def test_model_outputs_and_warning():
    with pytest.warns(UserWarning, match="without weights"):
        m = create_model("ldeq", **TINY68, max_iters=2)
    assert m.scheme == "ibug68" and m.cfg.num_landmarks == 68
    out = m.predict(torch.rand(1, 3, 256, 256), [None], _frames(1))
    assert out.landmarks_numpy().shape == (1, 68, 2)
    assert set(out.stats_numpy()) == {"solver_iters", "cell_evals", "residual"}
    assert out.heatmaps.shape == (1, 68, 64, 64) and out.states[0].shape == (68, 64, 64)
    cfg = m.config()
    json.dumps(cfg)
    assert cfg["num_landmarks"] == 68 and cfg["rwr"] is False and cfg["label_tags"] == []
    assert cfg["rwr_max_iters"] == 1 and cfg["rwr_full_first_frame"] is False and cfg["early_exit"] is False
    with pytest.raises(TypeError, match="rwr_max_iters"):
        create_model("ldeq", **TINY68, rwr_iters=2)
    with pytest.raises(ValueError, match="98 .*68"):
        create_model("ldeq", num_landmarks=5)


# --------------------------------------------------------------------------------------------------------
# checkpoint files


class NotAllowed:  # module-level so that torch.save can pickle it by reference
    pass


def test_toolkit_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    m = _tiny_model(max_iters=3)
    path = tmp_path / "ck" / "ldeq_tiny.pt"
    ck = make_checkpoint("ldeq", m.cfg.to_dict(), m.net.state_dict(), scheme="ibug68", epoch=3)
    save_checkpoint(path, ck)
    assert [p.name for p in path.parent.iterdir()] == ["ldeq_tiny.pt"]  # no temp file left behind
    loaded = load_checkpoint(path)
    assert loaded["format"] == "toolkit" and loaded["epoch"] == 3
    m2 = create_model("ldeq", weights=str(path))
    imgs = torch.rand(1, 3, 256, 256)
    np.testing.assert_allclose(
        m2.predict(imgs, [None], _frames(1)).landmarks_numpy(),
        m.predict(imgs, [None], _frames(1)).landmarks_numpy(),
        atol=1e-6,
    )


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(junk)
    evil = tmp_path / "evil.pt"
    torch.save({"arch": "ldeq", "state_dict": {"w": torch.zeros(1)}, "obj": NotAllowed()}, evil)
    with pytest.raises(CheckpointError, match="NotAllowed"):
        load_checkpoint(evil)
    nosd = tmp_path / "nosd.pt"
    torch.save({"arch": "ldeq", "config": {}}, nosd)
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        load_checkpoint(nosd)
    other = tmp_path / "unet.pt"
    torch.save({"arch": "unet", "config": {}, "state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="'unet'"):
        load_arch_checkpoint(other, "ldeq")
    # wrong keys: missing and unexpected are both listed
    net = LDEQNet(LDEQConfig(**NANO))
    sd = dict(net.state_dict())
    sd.pop("deq_layer.cell.head.conv.bias")
    sd["deq_layer.cell.extra.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError,
        match=r"missing keys \(1\): deq_layer.cell.head.conv.bias.*unexpected keys \(1\): deq_layer.cell.extra.weight",
    ):
        load_state_dict_strict(net, sd)
    sd = dict(net.state_dict())
    sd["tail.0.conv.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_state_dict_strict(net, sd)
    # saving refuses what loading would refuse, and leaves nothing behind
    bad = tmp_path / "out" / "bad.pt"
    with pytest.raises(CheckpointError):
        save_checkpoint(bad, {"arch": "ldeq", "state_dict": {"w": torch.zeros(1)}, "obj": NotAllowed()})
    assert not bad.exists() and os.listdir(bad.parent) == []
    # a bare state dict is recognised but carries no configuration
    bare = tmp_path / "bare.pt"
    torch.save(net.state_dict(), bare)
    assert load_checkpoint(bare)["format"] == "state_dict"
    with pytest.raises(CheckpointError, match="bare state dict"):
        load_arch_checkpoint(bare, "ldeq")


def test_predict_puts_a_network_left_in_training_mode_back_in_eval():
    m = _tiny_model(**WIDE68, solver="anderson", max_iters=2, tol=1e-3)
    imgs = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    want = m.predict(imgs, [None], [None]).landmarks_numpy()
    m.net.tail[0].norm.train()  # one BatchNorm in training mode would use (and change) batch statistics
    got = m.predict(imgs, [None], [None]).landmarks_numpy()
    assert not any(mod.training for mod in m.net.modules())
    np.testing.assert_array_equal(got, want)
