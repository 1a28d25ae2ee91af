"""Typed config schemas (registered in Hydra's ConfigStore) and config lookup.

Every key of the public interface is declared once here, with its meaning. ``conf/*.yaml`` only set values;
a mistyped key or a value of the wrong type fails when Hydra composes the config, before any work starts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class Algorithm(str, enum.Enum):
    reptile = "reptile"  # theta += eps * (mean_i phi_i - theta)               (paper Alg. 2)
    fomaml = "fomaml"  # theta += eps * mean_i (phi_i - phi_i before last step)  (paper section 5)


class InnerOptimizerName(str, enum.Enum):
    adam = "adam"
    sgd = "sgd"


class TrainPath(str, enum.Enum):
    sequential = "sequential"  # tasks one after another, Adam state carried task to task (reference)
    batched = "batched"  # all tasks of a meta-batch at once (torch.func); see README "Fast path"


class LossReduction(str, enum.Enum):
    mean = "mean"  # inner-loop loss averaged over the minibatch (PyTorch's default)
    sum = "sum"  # summed over the minibatch: the reference implementation (REFERENCE.md "Loss scale")


class EpsConvention(str, enum.Enum):
    pytorch = "pytorch"  # Adam adds eps to the bias-corrected sqrt(v_hat) (torch.optim.Adam)
    tensorflow = "tensorflow"  # eps added to sqrt(v) before bias correction (tf.train.AdamOptimizer, reference)


class InnerState(str, enum.Enum):
    checkpoint = "checkpoint"  # each evaluation task starts from the inner optimizer state saved in training
    fresh = "fresh"  # each evaluation task starts from a new optimizer


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Dtype(str, enum.Enum):
    float32 = "float32"
    float64 = "float64"
    bfloat16 = "bfloat16"  # autocast for the forward pass; weights stay float32


# ----------------------------------------------------------------------------------------------- dataset
@dataclass
class SineDataConfig:
    """Sine-wave regression task family y = a*sin(x + b) (paper section 6 case study; REFERENCE.md)."""

    name: str = "sine"
    root: str | None = None  # unused: sine tasks are generated, not stored
    split: str = "streams"  # train / val / test are separate random streams, not class splits
    split_seed: int = 0
    val_characters: int = 0
    amplitude_min: float = 0.1
    amplitude_max: float = 5.0
    phase_min: float = 0.0
    phase_max: float = 6.283185307179586
    x_min: float = -5.0
    x_max: float = 5.0
    num_points: int = 50  # the fixed grid x = linspace(x_min, x_max, num_points)


@dataclass
class ImageDataConfig:
    """An image classification dataset prepared into HDF5 (see ``reptile data``)."""

    name: str = MISSING  # omniglot, omniglot_small, miniimagenet, folder
    root: str | None = None  # data root; null -> $REPTILE_DATA or ~/.cache/reptile
    split: str = "reptile"  # omniglot: reptile (seeded 1200/423) or vinyals (fixed lists)
    split_seed: int = 0  # seeds the class split only; `seed` never moves a class between splits
    val_characters: int = 0  # reptile split: carve this many of the 1200 training characters for validation
    rotations: bool = True  # training classes x4 (0/90/180/270 degrees), each a new class (paper section 7)
    # resize filter: which prepared Omniglot / Mini-ImageNet file to read (nearest: Omniglot as the reference;
    # lanczos: Mini-ImageNet's import), or how a folder's non-binary images are resized when prepared
    resize_filter: str = "nearest"
    image_size: int = 28
    channels: int = 1
    split_fractions: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])  # folder: train/val/test


@dataclass
class Nav2DConfig:
    """2D navigation task family (MAML's RL benchmark, Finn et al. 2017 section 5.3; reptile_cli/rl/envs.py)."""

    name: str = "nav2d"
    horizon: int = 100  # steps per episode
    rollouts: int = 20  # episodes collected per inner step (and per evaluation point)
    discount: float = 0.99
    goal_low: float = -0.5  # goals uniform in [goal_low, goal_high]^2
    goal_high: float = 0.5
    action_limit: float = 0.1  # each velocity coordinate clipped to [-limit, limit]


@dataclass
class CartPoleConfig:
    """CartPole with physics drawn per task (Gymnasium's CartPole; reptile_cli/rl/envs.py)."""

    name: str = "cartpole"
    horizon: int = 200
    rollouts: int = 10
    discount: float = 0.99
    length_min: float = 0.25  # half pole length, m (Gymnasium's default 0.5)
    length_max: float = 1.0
    masspole_min: float = 0.05  # kg (default 0.1)
    masspole_max: float = 0.5
    force_min: float = 5.0  # push force, N (default 10)
    force_max: float = 15.0


# ----------------------------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    name: str = MISSING  # conv4, resnet12, mlp, or policy (RL): reptile_cli.models.MODELS
    # conv4 (REFERENCE.md "Models"); in_channels, image_size and bn_eps also resnet12
    in_channels: int = 1
    image_size: int = 28
    filters: int = 64
    stride: int = 2  # 2 for Omniglot (no pooling); 1 with max-pool for Mini-ImageNet
    max_pool: bool = False
    # batch-norm epsilon: 1e-3 as TensorFlow's batch_normalization in the reference (PyTorch's default is 1e-5)
    bn_eps: float = 1e-3
    # resnet12 (reptile_cli/models/resnet12.py): channels of its 4 residual blocks (MetaOptNet's; TADAM's is
    # [64,128,256,512]) and the negative slope of its leaky ReLUs
    widths: list[int] = field(default_factory=lambda: [64, 160, 320, 640])
    leaky_slope: float = 0.1
    # resnet12: dropout (blocks 1-2) and DropBlock (blocks 3-4) rate in the meta-training inner loop, 0 = off
    # (MetaOptNet: 0.1), and DropBlock's block side in pixels (MetaOptNet: 5 at 84x84, 2 at 32x32)
    drop_rate: float = 0.0
    dropblock_size: int = 5
    # mlp
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    in_features: int = 1
    out_features: int = 1
    # policy (RL): an MLP (hidden, activation, in/out_features) with a Gaussian or categorical action head
    distribution: str = "gaussian"
    init_log_std: float = 0.0  # Gaussian: initial log standard deviation of each action dimension


# ----------------------------------------------------------------------------------------------- episodes
@dataclass
class EpisodeConfig:
    """What one task (episode) holds. Paper section 7 and appendix table."""

    ways: int = 5  # N classes per task
    shots: int = 1  # K support examples per class at evaluation (sine: support points)
    query_shots: int = 1  # query examples per class at evaluation (reference: 1; sine: ignored, whole grid)
    train_shots: int = 10  # examples per class in a training task, all fed to the inner loop (sine: points)


@dataclass
class TrainerConfig:
    """Reptile outer and inner loop (paper Algorithm 2; appendix table for the published values)."""

    algorithm: Algorithm = Algorithm.reptile
    meta_iters: int = 100_000  # outer-loop iterations
    meta_batch_size: int = 5  # tasks per meta-iteration
    meta_step_size: float = 1.0  # epsilon at iteration 0
    meta_step_size_final: float = 0.0  # epsilon at the last iteration (linear anneal)
    inner_optimizer: InnerOptimizerName = InnerOptimizerName.adam
    inner_lr: float = 0.001
    adam_beta1: float = 0.0  # the paper's inner Adam uses beta1 = 0
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    # where Adam's epsilon enters (see inner_optim.step_eps); the paper presets use the reference's tensorflow
    adam_eps_convention: EpsConvention = EpsConvention.pytorch
    # inner-loop loss over a minibatch: mean, or sum as the reference (matters when evaluation starts from the
    # trained Adam state with another batch size, and for SGD); the paper presets use sum. README "Loss scale"
    loss_reduction: LossReduction = LossReduction.mean
    inner_steps: int = 5  # inner minibatch steps per training task
    inner_batch_size: int = 10  # examples per inner step (a shuffled walk without replacement)
    eval_every: int = 0  # validate every this many iterations (0: only at the end); needs a val split
    val_tasks: int = 100  # tasks per periodic validation (the final one uses eval.val_episodes)
    checkpoint_every: int = 1000  # write last.pt every this many iterations
    log_every: int = 100  # append train metrics to metrics.jsonl every this many iterations
    resume: str | None = None  # a run directory or checkpoint to continue, or "auto"
    max_time: float | None = None  # seconds; stop cleanly (resumable, exit 3) when exceeded
    path: TrainPath = TrainPath.sequential
    progress: bool = True  # rich progress bar


@dataclass
class EvalConfig:
    """Few-shot evaluation protocol (REFERENCE.md "Evaluation"; reference implementation)."""

    split: str = "test"
    episodes: int = 10_000  # test tasks for `reptile eval`
    val_episodes: int = 500  # tasks of the validation evaluation that ends `reptile train`
    seed: int = 0  # evaluation tasks draw from their own stream
    transductive: bool = False  # true: all query images in one batch (batch norm mixes them)
    inner_steps: int = 50
    inner_batch_size: int = 5
    inner_state: InnerState = InnerState.checkpoint
    path: TrainPath = TrainPath.batched  # batched: chunks of tasks at once; sequential: the reference loop
    chunk_size: int = 0  # tasks per chunk on the batched path (0: by activation size, at most 32 CPU / 500 GPU)
    # reptile eval only (training refuses them):
    new_head: str | None = None  # another N than trained: zeros or glorot head (models.replace_head)
    episodes_file: str | None = None  # fixed episodes from a file (data.episodes.FixedEpisodes) instead of drawn
    save_episodes: str | None = None  # write the drawn episodes to this file (the format episodes_file reads)


# ----------------------------------------------------------------------------------------------- trackers
@dataclass
class TensorBoardLogger:
    """``logger=tensorboard``: event files through torch.utils.tensorboard (reptile_cli/trackers/)."""

    log_dir: str | None = None  # default RUN_DIR/tensorboard


@dataclass
class MLflowLogger:
    """``logger=mlflow``."""

    tracking_uri: str | None = None  # a server (http://host:5000) or store; default file store <run parent>/mlruns
    experiment: str | None = None  # default: the run's name


@dataclass
class WandbLogger:
    """``logger=wandb``."""

    mode: str = "offline"  # offline (no account or network; wandb sync later), online, disabled
    project: str = "reptile"
    entity: str | None = None


@dataclass
class LoggersConfig:
    """The trackers of a run (``logger=tensorboard``, ``logger=[tensorboard,mlflow]``); null: not used."""

    tensorboard: TensorBoardLogger | None = None
    mlflow: MLflowLogger | None = None
    wandb: WandbLogger | None = None


@dataclass
class TrainCommand:
    """``reptile train``: the primary config ``conf/train.yaml``."""

    dataset: Any = MISSING
    model: Any = MISSING
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0  # model init and training tasks; never the class split (dataset.split_seed)
    device: Device = Device.auto
    dtype: Dtype = Dtype.float32
    name: str = "run"  # run name, part of the run directory
    # torch CPU threads of this process; 0: automatic (all cores for a single run; in a joblib sweep the
    # cores divided by the parallel jobs; under submitit, cpus_per_task), so parallel jobs never oversubscribe
    threads: int = 0
    logger: LoggersConfig = field(default_factory=LoggersConfig)  # experiment trackers (conf/logger/)


# ----------------------------------------------------------------------------------------------- eval
@dataclass
class EvalOverrides:
    """``reptile eval`` settings; null means "as in the checkpoint's training config"."""

    split: str = "test"
    episodes: int | None = None  # null: 10,000 drawn tasks, or every episode of eval.episodes_file
    val_episodes: int | None = None
    seed: int = 0
    transductive: bool | None = None
    inner_steps: int | None = None
    inner_batch_size: int | None = None
    inner_state: InnerState | None = None
    path: TrainPath | None = None
    chunk_size: int | None = None
    new_head: str | None = None  # evaluate on another N than trained: zeros or glorot (README "Other N")
    episodes_file: str | None = None  # JSON file of fixed episodes (README "Fixed episodes")
    save_episodes: str | None = None  # write the episodes drawn to this file


@dataclass
class EpisodeOverrides:
    ways: int | None = None
    shots: int | None = None
    query_shots: int | None = None
    train_shots: int | None = None


@dataclass
class DatasetOverrides:
    root: str | None = None


@dataclass
class TrainerOverrides:
    progress: bool | None = None  # rich progress bar
    # null: as the checkpoint was trained (configs from before this setting: mean)
    loss_reduction: LossReduction | None = None


@dataclass
class EvalCommand:
    """``reptile eval CHECKPOINT [CHECKPOINT_B]``: the primary config ``conf/eval.yaml``."""

    checkpoint: str = MISSING
    checkpoint_b: str | None = None  # paired comparison on identical tasks
    eval: EvalOverrides = field(default_factory=EvalOverrides)
    episode: EpisodeOverrides = field(default_factory=EpisodeOverrides)
    dataset: DatasetOverrides = field(default_factory=DatasetOverrides)
    trainer: TrainerOverrides = field(default_factory=lambda: TrainerOverrides())
    device: Device = Device.auto
    dtype: Dtype | None = None
    threads: int = 0  # as ``reptile train``
    output: str | None = None  # where eval.json goes (default: Hydra's run directory)


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainCommand)
    cs.store(name="eval_schema", node=EvalCommand)
    cs.store(group="dataset", name="sine_schema", node=SineDataConfig)
    cs.store(group="dataset", name="image_schema", node=ImageDataConfig)
    cs.store(group="dataset", name="nav2d_schema", node=Nav2DConfig)
    cs.store(group="dataset", name="cartpole_schema", node=CartPoleConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)


def to_plain(cfg: DictConfig | dict) -> dict:
    """A plain, resolved dict (enums as strings), safe for JSON and ``torch.load(weights_only=True)``."""
    if isinstance(cfg, dict):
        cfg = OmegaConf.create(cfg)
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]
