"""Reptile for RL (issue 14): environment dynamics and rewards by hand, task draws by seed, returns and
advantages by hand, the policy's log-probabilities, bad configs, and the CLI end to end (train, exact resume,
evaluation with the adaptation curve, paired comparison)."""

import json
import math
import signal

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from reptile_cli.checkpoint import load_checkpoint
from reptile_cli.config import CartPoleConfig, Nav2DConfig
from reptile_cli.errors import ConfigError
from reptile_cli.models.policy import LinearFeatureBaseline, PolicyMLP
from reptile_cli.rl import pg
from reptile_cli.rl.envs import CartPoles, Nav2D, nav2d_rollout_step
from reptile_cli.rl.tasks import CartPoleTasks, Nav2DTasks, build_rl_family
from tests.test_resume import start, wait_for_checkpoint

pytest.importorskip("gymnasium")

QUICK = ["experiment=rl_nav2d", "dataset.horizon=20", "dataset.rollouts=5", "trainer.meta_iters=12",
         "trainer.meta_batch_size=3", "trainer.eval_every=6", "trainer.val_tasks=3", "eval.val_episodes=4",
         "trainer.checkpoint_every=2", "trainer.log_every=2", "trainer.progress=false"]


def test_nav2d_step_by_hand():
    pos = torch.tensor([[0.0, 0.0], [0.3, -0.2]], dtype=torch.float64)
    action = torch.tensor([[0.05, 0.5], [-1.0, 0.02]], dtype=torch.float64)
    goal = torch.tensor([0.1, 0.1], dtype=torch.float64)
    new, reward = nav2d_rollout_step(pos, action, goal, 0.1)
    # clipped to 0.1 per coordinate: (0.05, 0.1) and (0.3 - 0.1, -0.2 + 0.02)
    assert torch.allclose(new, torch.tensor([[0.05, 0.1], [0.2, -0.18]], dtype=torch.float64))
    assert reward[0] == pytest.approx(-0.05) and reward[1] == pytest.approx(-math.hypot(0.1, 0.28))
    assert (reward <= 0).all()  # minus a distance
    env = Nav2D(goal=[0.1, 0.1], horizon=2)
    obs, _ = env.reset(seed=0)
    obs, r, term, trunc, _ = env.step(np.array([0.05, 0.5]))
    assert np.allclose(obs, [0.05, 0.1]) and r == pytest.approx(-0.05) and not trunc
    assert env.step(np.zeros(2))[3]  # truncated at the horizon


def test_cartpole_physics_per_episode_follow_gymnasium():
    """Two episodes with other physics step as Gymnasium's own CartPoleEnv does with those constants."""
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    length, mass, force = np.array([0.5, 1.0]), np.array([0.1, 0.3]), np.array([10.0, 6.0])
    envs = CartPoles(length, mass, force, horizon=50)
    state = envs.reset(seed=3)
    singles = []
    for i in range(2):
        e = CartPoleEnv()
        e.reset(seed=0)
        e.length, e.masspole, e.force_mag = length[i], mass[i], force[i]
        e.total_mass, e.polemass_length = e.masspole + e.masscart, e.masspole * e.length
        e.state = state[i].astype(np.float64)
        singles.append(e)
    for action in ([1, 0], [1, 1], [0, 1]):
        state, reward, done = envs.step(np.array(action))
        for i, e in enumerate(singles):
            s, r, *_ = e.step(action[i])
            assert np.allclose(state[i], s, atol=1e-5) and reward[i] == r == 1.0


def test_returns_and_advantages_by_hand():
    rewards = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the second episode ended after 2 steps
    g = pg.returns_to_go(rewards, mask, 0.5)
    assert torch.allclose(g, torch.tensor([[1.75, 1.5, 1.0], [2.0, 0.0, 0.0]]))
    assert pg.episode_returns(rewards, mask).tolist() == [3.0, 2.0]
    adv = pg.advantages(g, torch.zeros_like(g), mask, normalize=False)
    assert torch.equal(adv, g * mask)
    norm = pg.advantages(g, torch.full_like(g, 1.0), mask)
    valid = norm[mask.bool()]
    assert valid.mean().abs() < 1e-6 and valid.std(unbiased=False) == pytest.approx(1.0, abs=1e-5)
    assert norm[1, 2] == 0
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -9.0]], requires_grad=True)
    loss = pg.surrogate(logp, adv, mask)
    assert loss.item() == pytest.approx((1.75 + 3.0 + 0.5 + 2.0 + 0.0) / 5)  # -sum(logp*A)/valid, logp<0
    loss.backward()
    assert torch.allclose(logp.grad, -adv * mask / 5)


def test_policy_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    g = PolicyMLP(2, [8], 2, "tanh", "gaussian", init_log_std=-0.5)
    obs, act = torch.randn(6, 2), torch.randn(6, 2)
    ref = torch.distributions.Normal(g(obs), torch.exp(g.log_std)).log_prob(act).sum(-1)
    assert torch.allclose(g.log_prob(obs, act), ref, atol=1e-6)
    c = PolicyMLP(4, [8], 3, "relu", "categorical")
    obs, act = torch.randn(5, 4), torch.tensor([0, 2, 1, 1, 0])
    assert torch.allclose(c.log_prob(obs, act), torch.distributions.Categorical(logits=c(obs)).log_prob(act))
    gen = torch.Generator().manual_seed(1)
    a1 = c.sample(obs, gen)
    assert torch.equal(a1, c.sample(obs, torch.Generator().manual_seed(1)))


def test_linear_baseline_fits_a_linear_return():
    obs = torch.rand(4, 10, 2)
    returns = 3 * obs[..., 0] - obs[..., 1] + 0.5
    pred = LinearFeatureBaseline().fit_predict(obs, returns, torch.ones(4, 10))
    assert torch.allclose(pred, returns, atol=1e-4)


def test_task_draws_are_reproducible_by_seed_and_streams_differ():
    fam = Nav2DTasks(OmegaConf.structured(Nav2DConfig()))
    a, b = fam.train_task(0, 5, 1).params, fam.train_task(0, 5, 1).params
    assert a == b and a != fam.train_task(1, 5, 1).params and a != fam.train_task(0, 5, 2).params
    test = fam.eval_task("test", 0, 0).params
    assert test != fam.eval_task("val", 0, 0).params and all(-0.5 <= x <= 0.5 for x in test["goal"])
    cart = CartPoleTasks(OmegaConf.structured(CartPoleConfig()))
    p = cart.train_task(0, 0, 0).params
    assert 0.25 <= p["length"] <= 1.0 and 5.0 <= p["force_mag"] <= 15.0
    torch.manual_seed(0)
    policy = PolicyMLP(2, [8], 2)
    r1 = fam.train_task(0, 0, 0).rollout(policy, 123)
    r2 = fam.train_task(0, 0, 0).rollout(policy, 123)
    assert torch.equal(r1.rewards, r2.rewards) and r1.rewards.shape == (20, 100)


@pytest.mark.parametrize("cls,cfg,override,message", [
    (Nav2DTasks, Nav2DConfig, {"horizon": 0}, "dataset.horizon=0"),
    (Nav2DTasks, Nav2DConfig, {"discount": -0.1}, "dataset.discount=-0.1"),
    (Nav2DTasks, Nav2DConfig, {"rollouts": 0}, "dataset.rollouts=0"),
    (CartPoleTasks, CartPoleConfig, {"length_min": 2.0}, "dataset.length_min=2.0"),
])
def test_bad_config_is_one_error(cls, cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        cls(OmegaConf.structured(cfg(**override)))


def test_unknown_environment(cli, tmp_path):
    with pytest.raises(ConfigError, match="not an RL task family"):
        build_rl_family(OmegaConf.create({"name": "mountaincar"}))
    r = cli("train", "experiment=rl_nav2d", "dataset=mountaincar", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    for override, needle in (("dataset.horizon=0", "dataset.horizon=0"), ("dataset.discount=-1", "discount"),
                             ("trainer.path=batched", "trainer.path=sequential"), ("episode.ways=3", "ways"),
                             ("model=mlp_sine", "policy")):
        r = cli("train", *QUICK, override, f"hydra.run.dir={tmp_path / 'x'}", cwd=tmp_path)
        assert r.returncode == 2 and needle in r.stderr.strip().splitlines()[-1], (override, r.stderr)


def test_train_resume_exactly_and_evaluate_the_curve(cli, tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    r = cli("train", *QUICK, f"hydra.run.dir={ref}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    proc = start([*QUICK, f"hydra.run.dir={run}"], tmp_path)
    wait_for_checkpoint(run, 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = cli("train", f"trainer.resume={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(run / "last.pt")["model"], load_checkpoint(ref / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical after a kill and resume
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("train/return" in x for x in records) and any("val/return" in x for x in records)
    r = cli("eval", str(ref / "last.pt"), str(ref / "init.pt"), "eval.episodes=4", "eval.inner_steps=2",
            "output=ev.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["metric"] == "return" and [p["step"] for p in ev["adaptation_curve"]] == [0, 1, 2]
    assert ev["adaptation_curve"][0]["mean"] == pytest.approx(ev["before_adaptation"]["mean"])
    assert ev["adaptation_curve"][-1]["mean"] == pytest.approx(ev["mean"])
    assert len(ev["comparison"]["per_task_b"]) == 4 and "paired_difference" in ev["comparison"]
    paired = ev["comparison"]["paired_curve"]  # per adaptation step, A - B on the same tasks
    assert [p["step"] for p in paired] == [0, 1, 2]
    assert paired[-1]["mean"] == pytest.approx(ev["comparison"]["paired_difference"]["mean"])
    assert paired[0]["mean"] == pytest.approx(ev["before_adaptation"]["mean"]
                                              - ev["comparison"]["b"]["before_adaptation"]["mean"])
    assert (tmp_path / "ev_adaptation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = cli("eval", str(ref / "last.pt"), "eval.episodes=4", "eval.transductive=true", cwd=tmp_path)
    assert r.returncode == 2 and "does not apply" in r.stderr
    assert ev["settings"]["horizon"] == 20 and ev["settings"]["rollouts"] == 5 and "ways" not in ev["settings"]
    for bad in ("eval.inner_batch_size=3", "eval.save_episodes=eps.json", "eval.episodes_file=eps.json"):
        r = cli("eval", str(ref / "last.pt"), "eval.episodes=4", bad, "output=bad/ev.json", cwd=tmp_path)
        assert r.returncode == 2 and "does not apply" in r.stderr and len(r.stderr.strip().splitlines()) == 1, bad
        assert not (tmp_path / "bad").exists() and not (tmp_path / "eps.json").exists()  # refused before any work
