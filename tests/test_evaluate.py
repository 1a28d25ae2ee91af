"""Evaluation semantics: nothing of the trained state changes; protocols; same tasks for two checkpoints."""

import copy

import torch
from omegaconf import OmegaConf

from reptile_cli.config import EpisodeConfig, EvalConfig, ImageDataConfig, TrainerConfig
from reptile_cli.evaluate import Evaluator, predict
from reptile_cli.families import build_task_family
from reptile_cli.inner_optim import InnerOptimizer
from reptile_cli.models.conv4 import Conv4
from reptile_cli.reptile import get_params


def setup(root, **eval_kw):
    fam = build_task_family(OmegaConf.structured(ImageDataConfig(name="omniglot_small", split="alphabets",
                                                                 root=str(root))),
                            OmegaConf.structured(EpisodeConfig(ways=5, shots=1, query_shots=2)))
    torch.manual_seed(0)
    model = Conv4(5)
    tcfg = OmegaConf.structured(TrainerConfig())
    ecfg = OmegaConf.structured(EvalConfig(inner_steps=5, **eval_kw))
    opt = InnerOptimizer(model, tcfg)
    x = fam.train_task(0, 0, 0)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x.x), x.y).backward()
    opt.step()  # a non-trivial saved optimizer state
    return fam, model, tcfg, ecfg, opt


def test_evaluation_changes_nothing(small_store):
    fam, model, tcfg, ecfg, opt = setup(small_store)
    weights = copy.deepcopy(model.state_dict())
    state = copy.deepcopy(opt.state_dict())
    ev = Evaluator(fam, model, tcfg, ecfg, torch.device("cpu"), torch.float32)
    result = ev.evaluate(get_params(model), opt.state_dict(), "test", 6, 0, progress=False)
    assert len(result.after) == 6 and all(0 <= a <= 1 for a in result.after)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    now = opt.state_dict()
    assert now["step"] == state["step"]
    assert all(torch.equal(state["exp_avg_sq"][k], now["exp_avg_sq"][k]) for k in state["exp_avg_sq"])


def test_same_tasks_same_scores_and_inner_state_matters(small_store):
    fam, model, tcfg, ecfg, opt = setup(small_store)
    ev = Evaluator(fam, model, tcfg, ecfg, torch.device("cpu"), torch.float32)
    a = ev.evaluate(get_params(model), opt.state_dict(), "test", 4, 0, progress=False)
    b = ev.evaluate(get_params(model), opt.state_dict(), "test", 4, 0, progress=False)
    assert a.after == b.after and a.other == b.other
    fresh = Evaluator(fam, model, tcfg, OmegaConf.structured(EvalConfig(inner_steps=5, inner_state="fresh")),
                      torch.device("cpu"), torch.float32)
    ev.run_task(get_params(model), opt.state_dict(), "test", 0, 0)
    w_ckpt = get_params(ev.work)
    fresh.run_task(get_params(model), opt.state_dict(), "test", 0, 0)
    w_fresh = get_params(fresh.work)
    assert any(not torch.equal(w_ckpt[k], w_fresh[k]) for k in w_ckpt)


def test_non_transductive_is_each_query_with_the_support_set(small_store):
    fam, model, *_ = setup(small_store)
    task = fam.eval_task("test", 0, 3)
    out = predict(model, task, transductive=False)
    for i, q in enumerate(task.query_x):
        alone = model(torch.cat([task.support_x, q[None]]))[-1]
        assert torch.allclose(out[i], alone, atol=1e-6)
    together = predict(model, task, transductive=True)
    assert not torch.allclose(out, together, atol=1e-4)  # batch statistics differ
