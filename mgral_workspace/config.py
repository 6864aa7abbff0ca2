"""Typed, validated configuration mirroring `params.yaml`, one section per concern."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A parameter file is missing, unreadable or holds a value outside its allowed range."""


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses YAML aliases (`*name`): a parameter file never needs them, and nested
    aliases expand exponentially (a 400-byte "alias bomb" took 13.7 GB before this)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a parameter file; "
                                              "write the value out", event.start_mark)
        return super().compose_node(parent, index)


_MAX_SHOWN = 200  # characters of a bad value shown in an error message

# The names mgral_core.strategies registers, in its order, so that a params file is checked without importing
# the strategies (they import torch, SciPy and POT: seconds before `mgral status` could answer).
# tests/core/test_config.py checks both against the registry; a new strategy goes in both places.
MODEL_STRATEGY_NAMES = ("mgral", "oracle_best_of_n")
BASELINE_STRATEGY_NAMES = ("random", "entropy_mean", "entropy_sum", "entropy_max", "least_confidence", "coreset",
                           "cdal", "ebal", "typiclust")
STRATEGY_NAMES = (*MODEL_STRATEGY_NAMES, *BASELINE_STRATEGY_NAMES)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else f"{text[:_MAX_SHOWN]}... ({len(text)} characters)"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetParams(_Section):
    """The built-in generated dataset (ignored for projects made from your own data)."""

    seed: int = Field(0, ge=0, description="base seed of this section's random streams (mgral_core.seeding)")
    image_size: int = Field(160, ge=32, le=1024, description="square image side in pixels")
    n_pool: int = Field(2000, ge=10, description="unlabeled pool images")
    n_val: int = Field(300, ge=5, description="labeled validation images (model selection, lookup table)")
    n_test: int = Field(500, ge=5, description="labeled test images (reporting only)")


class SimulationParams(_Section):
    """Simulated annotation: an oracle holds the pool's hidden labels."""

    initial_labeled: int = Field(100, ge=1, description="randomly chosen pool images labeled at cycle 0")
    seed: int = Field(0, ge=0, description="base seed of this section's random streams (mgral_core.seeding)")


class DetectorParams(_Section):
    """Ultralytics YOLO detector, trained on CPU by default."""

    backend: str = Field("ultralytics", description="detector backend, a key of mgral_backends.BACKENDS")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        from mgral_backends import BACKENDS

        if value not in BACKENDS:
            raise ValueError(f"unknown detector backend {value!r}; known backends: {', '.join(BACKENDS)}")
        return value

    model: str = Field("yolov8n.yaml", description="model yaml (built from scratch, offline) or a .pt path")
    pretrained: str | None = Field(
        "builtin", description="start of a yaml-built model: 'builtin' (the backbone and neck `mgral pretrain` "
        "made, shipped in mgral_backends/ultralytics/weights), a transfer file or YOLO .pt path, or null/'none' "
        "to train from scratch; unused when `model` is itself a .pt")

    @field_validator("pretrained")
    @classmethod
    def _pretrained_value(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("", "none", "null", "scratch"):
            return None
        if value != "builtin" and not value.endswith(".pt"):
            raise ValueError(f"expected 'builtin', null (from scratch) or a path to a .pt file, got {value!r}")
        return value

    imgsz: int = Field(160, ge=32, le=1280)
    epochs: int = Field(60, ge=1, description="epochs for a detector trained from scratch")
    finetune_epochs: int = Field(20, ge=1, description="epochs when warm-starting from the previous cycle")
    warm_start: bool = Field(True, description="start each cycle from the previous cycle's weights")
    batch: int = Field(16, ge=1)
    val_each_epoch: bool = Field(False, description="validate every epoch (best.pt by val mAP); else only the last")
    optimizer: Literal["auto", "SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp"] = Field(
        "auto", description="Ultralytics optimizer; 'auto' picks AdamW or SGD and its own learning rate "
        "from the number of iterations, ignoring lr0")
    lr0: float = Field(0.01, gt=0, le=1, description="initial learning rate (used unless optimizer is 'auto')")
    workers: int = Field(2, ge=0, le=32, description="dataloader worker processes (on the CPU only with "
                         "workers_on_cpu; Ultralytics' own trainer sets them to 0 there)")
    workers_on_cpu: bool = Field(False, description="keep `workers` DataLoader processes when training on the CPU "
                                 "(Ultralytics' own trainer loads in the training process there): 1.03-1.06x img/s "
                                 "on one torch thread, nothing beside threads 0, slower when other work fills the "
                                 "cores (docs/PERFORMANCE.md); always off in benchmark runs and in daemonic processes "
                                 "such as Dask workers")
    threads: int | None = Field(0, ge=0, le=256, description="torch threads while training on the CPU: 0 = one per "
                                "core (the default: 1.49-1.54x Ultralytics' own choice on 2 cores, "
                                "docs/PERFORMANCE.md), null = Ultralytics' choice (cores - 1, so 1 on a 2-core "
                                "machine), n = n; null in benchmark runs, whose campaigns share the cores")
    isolate: bool = Field(True, description="train each detector in a fresh Python process: the same result "
                          "wherever it runs (inside Prefect and Dask, other threads draw from the global RNGs "
                          "Ultralytics seeds; docs/RELIABILITY.md) for about 2 s of start-up; false = in this process")
    device: str = Field("cpu", description="'cpu', or a CUDA index such as '0' where a GPU exists")
    cache: bool = Field(True, description="cache decoded images in RAM")
    seed: int = Field(0, ge=0, description="base seed of this section's random streams (mgral_core.seeding)")
    predict_conf: float = Field(0.001, ge=0, le=1, description="confidence floor for evaluation/uncertainty")
    embed_batch: int = Field(64, ge=1)


class PretrainParams(_Section):
    """`mgral pretrain`: the generated pretraining set (mgral_workspace.pretrain_data) and its training."""

    images: int = Field(2000, ge=10, description="training images of the pretraining set")
    val_images: int = Field(200, ge=2, description="validation images of the pretraining set")
    epochs: int = Field(30, ge=1, description="epochs from scratch on the pretraining set")
    batch: int = Field(32, ge=1)
    seed: int = Field(0, ge=0, description="generator and training seed")


class SelectionParams(_Section):
    """Which strategy picks the next batch and how many images it picks."""

    strategy: str = "mgral"
    budget: int = Field(100, ge=1, description="images selected per cycle (k)")
    seed: int = Field(0, ge=0, description="base seed of this section's random streams (mgral_core.seeding)")
    coverage_clusters: int = Field(8, ge=0, le=256, description="k-means clusters of the embeddings over which "
                                   "the labeled set's mix of images is compared with the pool's after each "
                                   "selection (mgral_core.coverage); 0 = not measured")
    coverage_warn: float = Field(0.2, gt=0, le=1, description="the cycle report warns when that total variation "
                                 "distance exceeds this (random sampling stays near 0.05)")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in STRATEGY_NAMES:
            raise ValueError(f"unknown strategy {value!r}; known strategies: {', '.join(STRATEGY_NAMES)}")
        return value


class CampaignParams(_Section):
    """A simulated campaign: several cycles in a row."""

    cycles: int = Field(3, ge=1, le=100)


class LookupTableParams(_Section):
    """Per-cycle lookup table of proxy trainings on record batches (MGRAL inner loop)."""

    records: int = Field(16, ge=2, description="record batches trained per cycle (paper: 200 VOC, 30 COCO)")
    proxy: Literal["head", "full"] = Field(
        "head", description="record = 'head': final head layers fine-tuned on cached features (default, "
        "measured in docs/method.md) or 'full': the whole detector fine-tuned by the Ultralytics trainer")
    batch_sampling: Literal["random", "mixed", "designed"] = Field(
        "random", description="record batches: 'random' (the paper), 'mixed' (cluster mix drawn from a "
        "Dirichlet per batch, so records cover different batch compositions) or 'designed' (the baselines' "
        "proposals, perturbations of them and random batches: what the agent will meet; docs/method.md)")
    mix_clusters: int = Field(8, ge=1, description="mixed batches: k-means clusters of the candidates' embeddings")
    mix_concentration: float = Field(0.7, gt=0, description="mixed batches: Dirichlet concentration "
                                     "(smaller = batches more concentrated on few clusters)")
    design_proposals: list[str] | None = Field(None, description="designed batches: baselines whose proposals "
                                               "are records; null = every baseline but random (random batches "
                                               "are a kind of their own)")
    design_random_share: float = Field(0.25, ge=0, le=1, description="designed batches: share of the records "
                                       "that are random batches")
    design_cross_share: float = Field(0.5, ge=0, le=1, description="designed batches: share of the perturbations "
                                      "that swap in another proposal's images (the rest swap in random images)")
    design_swap_fractions: list[float] = Field([0.25, 0.5, 0.75], min_length=1, description="designed batches: "
                                               "shares of a proposal a perturbation replaces, used in turn")
    value: Literal["proxy", "expected_objects", "class_gain"] = Field(
        "class_gain", description="a record's value: 'class_gain' (default) = the mean over classes of "
        "log((1 + n_c(L) + e_c(B)) / (1 + n_c(L))), B's objects per class expected from the detector; "
        "'expected_objects' = the detector's expected objects per image of B (summed scores >= expected_floor); "
        "neither trains. 'proxy' = the val mAP50-95 of the proxy training on L + pseudo(B) (the paper; "
        "docs/method.md, deviation 19)")
    expected_floor: float = Field(0.05, ge=0, lt=1, description="expected_objects, class_gain: detection scores "
                                  "below this are not counted")
    class_gain_groups: int = Field(1, ge=1, le=256, description="class_gain: 1 = one learning curve per class; "
                                   "G > 1 = one per class and group of images, the groups k-means clusters of "
                                   "the cycle's pool embeddings weighted by their share of the pool, so objects "
                                   "of a kind of image L lacks (a domain) are worth more (docs/method.md)")
    class_gain_groups_on: Literal["always", "coverage_warning"] = Field(
        "always", description="when class_gain_groups > 1 applies: 'always', or 'coverage_warning' = only in the "
        "cycles whose labeled set starts far from the pool's mix (its coverage gap over "
        "selection.coverage_clusters clusters of that cycle's embeddings above selection.coverage_warn: the "
        "coverage warning's measure, taken again at the cycle's start), one curve per class otherwise "
        "(docs/method.md, deviation 21)")
    pseudo_conf: float = Field(0.5, gt=0, lt=1, description="confidence threshold for pseudo-labels")
    pseudo_labels: Literal["threshold", "sampled"] = Field(
        "threshold", description="B's pseudo-labels: 'threshold' = detections >= pseudo_conf (paper); 'sampled' = "
        "pseudo_draws draws from the detector's predictive distribution, each record the mean over draws "
        "(head proxy only; docs/method.md)")
    pseudo_draws: int = Field(3, ge=1, le=64, description="sampled pseudo-labels: draws averaged per record")
    pseudo_ignore: float = Field(0.05, ge=0, lt=1, description="head proxy: B's unassigned anchors with a "
                                 "detector score >= this are left out of the class loss (0 = off)")
    head_trainable: Literal["last", "head"] = Field("last", description="head proxy: 'last' = final 1x1 "
                                                    "convolutions only, 'head' = the whole Detect head")
    head_epochs: int = Field(10, ge=1, description="head proxy: passes over L + B per seed")
    head_lr: float = Field(1e-3, gt=0, description="head proxy: AdamW learning rate (cosine decay)")
    head_seeds: list[int] = Field([0, 1], min_length=1, description="head proxy: seeds averaged per record; "
                                  "the same for every record (common random numbers)")
    diagnostics: bool = Field(True, description="measure the table's repeatability (other seeds) and, in "
                              "simulation, its fidelity (oracle labels of B) every cycle; never used by selection")
    epochs: int = Field(2, ge=1, description="full proxy: fine-tuning epochs per record")
    freeze: int = Field(0, ge=0, le=22, description="full proxy: first N model layers frozen (10 = backbone)")
    seed: int = Field(0, ge=0, description="base seed of this section's random streams (mgral_core.seeding)")
    max_workers: int = Field(2, ge=1, le=64, description="records trained at once by the local thread runner")
    runner: Literal["threads", "dask"] = Field("threads", description="where records are trained")
    dask_address: str | None = Field(None, description="existing Dask scheduler (tcp://host:port); "
                                     "None starts a local cluster; MGRAL_DASK_ADDRESS overrides")
    dask_workers: int = Field(2, ge=1, le=256, description="worker processes of a local Dask cluster")

    @model_validator(mode="after")
    def _check_seeds(self) -> "LookupTableParams":
        if len(set(self.head_seeds)) != len(self.head_seeds):
            raise ValueError(f"head_seeds must be distinct, got {self.head_seeds}")
        if self.pseudo_labels == "sampled" and self.proxy != "head":
            raise ValueError("pseudo_labels: sampled needs proxy: head (the full proxy trains on thresholded "
                             "pseudo-labels only)")
        if self.proxy == "full" and self.value != "proxy":
            raise ValueError(f"proxy: full trains records only for value: proxy; with value: {self.value} "
                             "the records are read from the detections and would never train (set value: proxy)")
        return self

    @field_validator("design_proposals")
    @classmethod
    def _design_baselines(cls, value: list[str] | None) -> list[str] | None:
        return _known_baselines(value)

    @field_validator("design_swap_fractions")
    @classmethod
    def _swap_fractions(cls, value: list[float]) -> list[float]:
        bad = [f for f in value if not 0 < f < 1]
        if bad:
            raise ValueError(f"every swap fraction must be in (0, 1), got {bad}")
        return value

    def design_settings(self):
        """The pure core's `DesignSettings` of designed record batches."""
        from mgral_core.batch_design import DesignSettings

        return DesignSettings(random_share=self.design_random_share, cross_share=self.design_cross_share,
                              swap_fractions=tuple(self.design_swap_fractions))

    def design_proposers(self) -> dict:
        """{name: baseline} whose proposals a designed table holds, in registry (or the given) order."""
        from mgral_core.strategies import BASELINE_STRATEGIES

        names = self.design_proposals
        if names is None:  # random's proposal is one more random batch, and random batches are a kind of their own
            names = [name for name in BASELINE_STRATEGIES if name != "random"]
        return {name: BASELINE_STRATEGIES[name] for name in names}


def _known_baselines(value: list[str] | None) -> list[str] | None:
    """A list of distinct registered baseline names (or None), else a ValueError naming the bad ones."""
    if value is None:
        return value
    unknown = [name for name in value if name not in BASELINE_STRATEGY_NAMES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; proposals must be among {', '.join(BASELINE_STRATEGY_NAMES)}")
    if len(set(value)) != len(value):
        raise ValueError(f"proposals must be distinct, got {value}")
    return value


class RewardParams(_Section):
    """Reward estimator: Wasserstein matching of a candidate batch to lookup-table records."""

    method: Literal["sliced", "exact"] = "sliced"
    estimator: Literal["auto", "knn", "gp", "exact"] = Field(
        "auto", description="'auto' (default): 'exact' for a lookup_table.value read from the detections, 'knn' "
        "for proxy values; 'knn': inverse-distance mean of the n_neighbors nearest records (the paper); 'gp': "
        "Gaussian-process regression over every record, hyperparameters by leave-one-out; 'exact': the batch's "
        "value itself, computed for every batch the agent draws (only for a lookup_table.value read from the "
        "detections, which costs microseconds; docs/method.md)")
    n_projections: int = Field(128, ge=1)
    n_quantiles: int = Field(128, ge=2, description="quantiles per projection in the sliced index")
    n_neighbors: int = Field(3, ge=1, description="knn only")
    fallback_rule: str = Field("mean_minus_std", description="knn only: 'mean_minus_std', 'quantile:Q' or 'never'")
    gp_fallback_std: float = Field(0.8, gt=0, description="gp only: train a batch directly when the predicted "
                                   "std of its value exceeds this share of the prior std (> ~1.2 = never)")
    max_fallbacks: int = Field(2, ge=0)
    representation: Literal["embedding", "task_aware"] = Field(
        "embedding", description="what batch distances compare per image: 'embedding' (the detector's 256-d, the "
        "paper) or 'task_aware' (class-probability mass per class, detection entropy, PCA of the embedding)")
    task_aware_pca_dims: int = Field(8, ge=0, le=256, description="task_aware only: principal components kept")

    def resolved_estimator(self, table_value: str) -> str:
        """The estimator in use for records valued by `table_value` (lookup_table.value): 'auto' is 'exact'
        for values read from the detections (no training per batch) and 'knn' for proxy values."""
        if self.estimator != "auto":
            return self.estimator
        return "knn" if table_value == "proxy" else "exact"

    def estimator_options(self, table_value: str) -> dict[str, Any]:
        """Keyword arguments of `mgral_core.reward.RewardEstimator` from this section, for records valued by
        `table_value` (the representation is the caller's: it builds the estimator's `features_of`)."""
        return {"method": self.method, "estimator": self.resolved_estimator(table_value),
                "n_neighbors": self.n_neighbors,
                "n_projections": self.n_projections, "n_quantiles": self.n_quantiles,
                "fallback_rule": self.fallback_rule, "gp_fallback_std": self.gp_fallback_std,
                "max_fallbacks": self.max_fallbacks}

    @model_validator(mode="after")
    def _check_rule(self) -> "RewardParams":
        rule = self.fallback_rule
        if rule in ("mean_minus_std", "never"):
            return self
        if rule.startswith("quantile:"):
            try:
                q = float(rule.split(":", 1)[1])
            except ValueError:
                q = -1.0
            if 0.0 <= q <= 1.0:
                return self
        raise ValueError(f"fallback_rule must be 'mean_minus_std', 'never' or 'quantile:Q' with 0<=Q<=1, got {rule!r}")


class AgentParams(_Section):
    """LSTM sampling agent trained by policy gradient (MGRAL outer loop)."""

    iterations: int = Field(200, ge=1, description="policy-gradient iterations per cycle (paper: 2200 VOC)")
    lr: float = Field(1e-3, gt=0, le=1)
    baseline_decay: float = Field(0.5, ge=0, le=1, description="momentum of the moving-average baseline")
    chunks: int = Field(1, ge=1, description="1 = the pool as one sequence (paper); B > 1 = B pieces side by side")
    decoder_hidden: int = Field(64, ge=1, description="hidden width of the 2-layer decoder MLP")
    entropy_weight: float = Field(0.0, ge=0, description="entropy bonus on the policy (0 = off)")
    advantage: Literal["baseline", "normalized", "rank"] = Field(
        "normalized", description="'normalized' (default): R - mAP_ref over the spread of the last "
        "advantage_window rewards; 'baseline': R - mAP_ref (paper); 'rank': R's centred rank among them "
        "(docs/method.md)")
    advantage_window: int = Field(20, ge=2, le=10000, description="previous rewards 'normalized'/'rank' use")
    imitation_steps: int = Field(0, ge=0, le=10000, description="steps imitating the lookup table's best record "
                                 "before policy gradient (0 = off; ALIL-style start, docs/method.md)")
    large_pool: int = Field(5000, ge=0, description="above this many candidates the agent runs in pieces of 128 "
                            "steps with bfloat16 products where the CPU has them (0 = never; docs/PERFORMANCE.md)")
    shortlist: int = Field(0, ge=0, description="0 = the agent reads every candidate; N = only N of them, "
                           "shortlisted by shortlist_method (hierarchical selection for large pools; N >= budget)")
    shortlist_method: Literal["kmeans", "random", "cdal"] = Field(
        "kmeans", description="'kmeans': cluster-stratified random sample; 'random': uniform random sample; "
        "'cdal': CDAL's first N picks (k-center greedy on the detections' class distributions), so the agent "
        "chooses within CDAL's coverage (docs/method.md)")
    final_choice: Literal["top_k", "best_estimate", "best_sampled"] = Field(
        "best_sampled", description="'best_sampled' (default): the trained agent's top-k or the best batch it "
        "drew while training, whichever the reward rates higher; 'top_k': that top-k (paper); 'best_estimate': "
        "the batch the reward estimator rates highest of that top-k and the table's records (docs/method.md)")
    threads: int = Field(0, ge=0, le=256, description="torch threads for the agent on a large pool (above "
                         "large_pool; below it the agent runs on one thread); 0 = one per CPU core")

    def to_agent_settings(self):
        """The pure core's `AgentSettings`. The agent's seed is not a parameter: MGRAL draws it from the
        selection stream it is handed (`mgral_core.seeding`, from selection.seed and the cycle)."""
        from mgral_core.agent import AgentConfig, resolve_threads
        from mgral_core.strategies.mgral import AgentSettings

        config = AgentConfig(iterations=self.iterations, lr=self.lr, baseline_decay=self.baseline_decay,
                             chunks=self.chunks, decoder_hidden=self.decoder_hidden,
                             entropy_weight=self.entropy_weight, advantage=self.advantage,
                             advantage_window=self.advantage_window, imitation_steps=self.imitation_steps,
                             threads=resolve_threads(self.threads))
        return AgentSettings(config=config, shortlist=self.shortlist, shortlist_method=self.shortlist_method,
                             large_pool=self.large_pool, final_choice=self.final_choice)


class OracleParams(_Section):
    """The `oracle_best_of_n` ceiling (simulation only): candidate batches scored with the oracle's true labels.

    Not a strategy a user could run: it reads hidden labels, is refused in projects labeled by
    people, and every report shows it as `oracle_best_of_n (ceiling)`. Each candidate costs one
    head-proxy training (as a lookup-table record, about 4 s on the demo's pool).
    """

    candidates: int = Field(16, ge=2, le=1000, description="batches scored per cycle: every proposal, then "
                            "mixtures and random batches")
    mix_share: float = Field(0.5, ge=0, le=1, description="share of the batches beyond the proposals that are "
                             "mixtures (part of a proposal swapped for random images); the rest are random")
    swap_fraction: float = Field(0.5, gt=0, lt=1, description="share of a proposal's images a mixture replaces")
    proposals: list[str] | None = Field(None, description="baselines whose batches are candidates; null = every "
                                        "baseline (mgral is not one: it needs its own lookup table)")

    @field_validator("proposals")
    @classmethod
    def _known_baselines(cls, value: list[str] | None) -> list[str] | None:
        return _known_baselines(value)

    @model_validator(mode="after")
    def _check_counts(self) -> "OracleParams":
        proposals = len(BASELINE_STRATEGY_NAMES) if self.proposals is None else len(self.proposals)
        if self.candidates < proposals:
            which = "every baseline, as proposals is null" if self.proposals is None else "oracle.proposals"
            raise ValueError(f"candidates ({self.candidates}) must be at least the number of proposals ({proposals}: "
                             f"{which})")
        if self.proposals == [] and self.mix_share > 0:
            raise ValueError("mix_share > 0 needs proposals to mix; give proposals or set mix_share: 0")
        return self

    def to_settings(self):
        """The pure core's `OracleSettings`."""
        from mgral_core.strategies.oracle import OracleSettings

        return OracleSettings(candidates=self.candidates, mix_share=self.mix_share, swap_fraction=self.swap_fraction,
                              proposals=None if self.proposals is None else tuple(self.proposals))


class AnnotationParams(_Section):
    """Real labeling (not simulation): export of each batch and when to start the next cycle."""

    prelabel_conf: float = Field(0.25, ge=0, le=1, description="detector boxes above this become pre-annotations")
    min_labeled_fraction: float = Field(
        0.9, ge=0, le=1, description="a new cycle selects again only once this share of the open batch is labeled")
    min_eval_images: int = Field(
        10, ge=1, description="labeled images val and test each need for a meaningful mAP; `mgral init` carving "
        "fewer out of the labels says how many labels it takes (and offers eval_from_unlabeled)")
    eval_from_unlabeled: bool = Field(
        False, description="`mgral init` without val/test: carve them out of the unlabeled images (at least "
        "min_eval_images each), to be labeled with the first batch; always so when there are too few labels to carve "
        "(none included). `mgral init --eval-in-first-batch` sets it")


class TrackingParams(_Section):
    """MLflow tracking; the MLFLOW_TRACKING_URI environment variable overrides `uri`."""

    uri: str | None = Field(None, description="default: sqlite:///<project>/mlflow.db")
    experiment: str | None = Field(None, description="default: mgral-<project directory name>")
    version_pool: bool = Field(True, description="commit pool.csv and labels/ with DVC (+ git) after every change")
    register_detector: bool = Field(
        True, description="register every cycle's detector in the MLflow Model Registry (an MLflow pyfunc; aliases "
        "'champion', the best test mAP50-95, and 'latest-cycle'); a campaign's and a benchmark's cycles never do")
    registered_model: str | None = Field(
        None, description="the registered model's name; default: mgral-<project directory name>-detector")

    @field_validator("registered_model")
    @classmethod
    def _check_registered_model(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c in value for c in "/:'\"")):
            raise ValueError(f"a registered model name must be non-empty without '/', ':' or quotes, got {value!r}")
        return value


# The paper's MGRAL (records valued by proxy trainings, the k-NN reward, R - mAP_ref, the top-k), benchmarked
# beside the default MGRAL (the exact class-gain reward; docs/method.md deviation 19, docs/RESULTS.md).
MGRAL_PAPER = "mgral@lookup_table.value=proxy,reward.estimator=knn,agent.advantage=baseline,agent.final_choice=top_k"


class BenchmarkProfile(_Section):
    """One benchmark profile: strategies x seeds x cycles on a (possibly smaller) built-in dataset."""

    strategies: list[str] = ["random", "entropy_mean", "entropy_sum", "least_confidence", "coreset", "cdal", "ebal",
                             "typiclust", "mgral", MGRAL_PAPER, "oracle_best_of_n"]
    seeds: list[int] = [0, 1, 2]
    cycles: int = Field(2, ge=1)
    budget: int = Field(100, ge=1)
    n_pool: int = Field(1000, ge=10)
    image_size: int = Field(128, ge=32, le=1024)
    epochs: int = Field(40, ge=1)
    finetune_epochs: int = Field(10, ge=1)
    lookup_records: int = Field(16, ge=2)
    agent_iterations: int = Field(150, ge=1)
    pretrained: str | None = "builtin"
    """detector.pretrained of every run ('builtin': the shipped start of `mgral pretrain`; null: from scratch)."""
    lookup_diagnostics: bool = False
    """Measure MGRAL's lookup-table repeatability/fidelity every cycle (triples the table's cost)."""
    finetune_repeats: int = Field(1, ge=1, le=20)
    """Fine-tunes per cell after a selection, each with its own training seed; the cell is their mean (the
    campaign goes on from the first). Averages out the training noise that is most of the paired spread."""
    reuse: str | None = None
    """Another profile whose finished runs (and per-seed base) are copied instead of re-run when their
    run settings are identical (e.g. the ablation reuses quick's random and mgral runs)."""

    def apply(self, params: "Params", seed: int, out: Path) -> "Params":
        """The run parameters of one seed of this profile, tracked in `out`/mlflow.db."""
        return params.model_copy(update={
            "dataset": params.dataset.model_copy(update={"n_pool": self.n_pool, "image_size": self.image_size}),
            "detector": params.detector.model_copy(update={"imgsz": self.image_size, "epochs": self.epochs,
                                                           "finetune_epochs": self.finetune_epochs,
                                                           "pretrained": self.pretrained,
                                                           # campaigns run side by side (Dask): no core is free
                                                           # for loader workers, and a Dask worker may not fork
                                                           "workers_on_cpu": False, "threads": None}),
            "selection": params.selection.model_copy(update={"budget": self.budget, "seed": seed}),
            "simulation": params.simulation.model_copy(update={"seed": seed}),
            "campaign": params.campaign.model_copy(update={"cycles": self.cycles}),
            "lookup_table": params.lookup_table.model_copy(update={"records": self.lookup_records,
                                                                   "diagnostics": self.lookup_diagnostics}),
            "agent": params.agent.model_copy(update={"iterations": self.agent_iterations}),
            "tracking": params.tracking.model_copy(update={"uri": f"sqlite:///{(out / 'mlflow.db').resolve()}",
                                                           "experiment": "mgral-benchmark", "version_pool": False,
                                                           "register_detector": False}),
        })

    @field_validator("strategies")
    @classmethod
    def _check_strategies(cls, value: list[str]) -> list[str]:
        for spec in value:
            name, _, overrides = spec.partition("@")
            pairs = [pair for pair in overrides.split(",") if pair] if overrides else []
            if not name or any("=" not in pair or "." not in pair.split("=")[0] for pair in pairs):
                raise ValueError(f"strategy {spec!r}: expected NAME or NAME@section.key=value[,section.key=value]")
            if name not in STRATEGY_NAMES:
                raise ValueError(f"strategy {spec!r}: unknown strategy {name!r}; known strategies: "
                                 f"{', '.join(STRATEGY_NAMES)} (several specs are separated by commas)")
        if len(set(value)) != len(value):
            raise ValueError(f"strategies must be distinct, got {value}")
        return value

    @field_validator("pretrained")
    @classmethod
    def _check_pretrained(cls, value: str | None) -> str | None:
        return DetectorParams._pretrained_value(value)


def split_strategy_list(text: str) -> list[str]:
    """'random,mgral@a.b=1,c.d=2,ebal' -> ['random', 'mgral@a.b=1,c.d=2', 'ebal']: a comma-separated list of
    strategy specs, where a `key=value` after a spec's '@' belongs to that spec (ValueError if it has none)."""
    specs: list[str] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if "=" in token and "@" not in token:
            if not specs or "@" not in specs[-1]:
                raise ValueError(f"strategy list {text!r}: override {token!r} follows no 'strategy@key=value' spec")
            specs[-1] += f",{token}"
        else:
            specs.append(token)
    return specs


def split_strategy_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'mgral@lookup_table.records=4' -> ('mgral', {'lookup_table.records': 4}) (values read as YAML)."""
    name, _, overrides = spec.partition("@")
    pairs = [pair.split("=", 1) for pair in overrides.split(",") if pair]
    return name, {key.strip(): yaml.safe_load(value) for key, value in pairs}


class BenchmarkParams(_Section):
    """Profiles of `mgral benchmark` (durations and the power calculation behind them: docs/RESULTS.md).

    A strategy may carry parameter overrides after '@' (`mgral@lookup_table.records=4`): the
    ablation profile is the paper's Table III analog (MGRAL with lookup tables of 4, 16 and 48
    records), hierarchical selection (a shortlist of 400) and mixed record batches, next to random
    and plain MGRAL.
    """

    # 5 paired seeds at one cycle: more seeds at fewer cycles, for power (docs/RESULTS.md)
    quick: BenchmarkProfile = BenchmarkProfile(finetune_epochs=6, seeds=[0, 1, 2, 3, 4], cycles=1, finetune_repeats=3)
    ablation: BenchmarkProfile = BenchmarkProfile(
        strategies=["random", "mgral", "mgral@lookup_table.records=4", "mgral@lookup_table.records=48",
                    "mgral@agent.shortlist=400", "mgral@lookup_table.batch_sampling=mixed"], seeds=[0, 1],
        reuse="quick")
    full: BenchmarkProfile = BenchmarkProfile(
        strategies=["random", "entropy_mean", "entropy_sum", "entropy_max", "least_confidence", "coreset", "cdal", "ebal",
                    "typiclust", "mgral", MGRAL_PAPER, "oracle_best_of_n"],
        seeds=[0, 1, 2, 3, 4], cycles=5, budget=100, n_pool=2000, image_size=160, epochs=60, finetune_epochs=20,
        lookup_records=16, agent_iterations=300, lookup_diagnostics=True)
    runner: Literal["threads", "dask"] = Field(
        "threads", description="where the (strategy, seed) campaigns run: local threads (max_workers at once) or Dask "
        "worker processes (dask_address, MGRAL_BENCHMARK_DASK_ADDRESS, or a local cluster of dask_workers)")
    max_workers: int = Field(1, ge=1, le=64, description="campaigns at once on local threads (one process: torch "
                             "threads are shared, so 1 unless the trainings are small)")
    dask_address: str | None = Field(None, description="existing Dask scheduler (tcp://host:port); workers need "
                                     "the benchmark folder on shared storage")
    dask_workers: int = Field(2, ge=1, le=256, description="worker processes of a local Dask cluster (one per core)")

    @model_validator(mode="after")
    def _check_reuse(self) -> "BenchmarkParams":
        for name in PROFILES:
            reuse = getattr(self, name).reuse
            if reuse is not None and reuse not in PROFILES:
                raise ValueError(f"benchmark.{name}.reuse: expected one of {list(PROFILES)}, got {reuse!r}")
        return self


PROFILES = tuple(name for name, field in BenchmarkParams.model_fields.items()
                 if field.annotation is BenchmarkProfile)  # ("quick", "ablation", "full")


class Params(_Section):
    """Every parameter of MGRAL; `params.yaml` mirrors this structure key for key."""

    project_dir: str = "projects/demo"
    dataset: DatasetParams = DatasetParams()
    simulation: SimulationParams = SimulationParams()
    detector: DetectorParams = DetectorParams()
    pretrain: PretrainParams = PretrainParams()
    selection: SelectionParams = SelectionParams()
    campaign: CampaignParams = CampaignParams()
    lookup_table: LookupTableParams = LookupTableParams()
    reward: RewardParams = RewardParams()
    agent: AgentParams = AgentParams()
    oracle: OracleParams = OracleParams()
    annotation: AnnotationParams = AnnotationParams()
    benchmark: BenchmarkParams = BenchmarkParams()
    tracking: TrackingParams = TrackingParams()

    @model_validator(mode="after")
    def _check_groups_switch(self) -> "Params":
        t = self.lookup_table
        if t.class_gain_groups_on == "coverage_warning" and (t.class_gain_groups == 1 or t.value != "class_gain"
                                                            or self.selection.coverage_clusters == 0):
            raise ValueError("lookup_table.class_gain_groups_on: coverage_warning switches the class gain per group "
                             "on by the labeled set's coverage gap, so it needs lookup_table.value: class_gain "
                             f"(got {t.value}), lookup_table.class_gain_groups > 1 (got {t.class_gain_groups}) and "
                             f"selection.coverage_clusters > 0 (got {self.selection.coverage_clusters})")
        return self

    @model_validator(mode="after")
    def _check_exact_reward(self) -> "Params":
        if self.reward.estimator == "exact" and self.lookup_table.value == "proxy":
            raise ValueError("reward.estimator: exact needs lookup_table.value expected_objects or class_gain (values "
                             "read from the detections); with value: proxy every batch the agent draws would be a "
                             "training, so use knn or gp there")
        return self


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid parameters"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        got = item.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {_shown(got)})"
        lines.append(f"  {key}: {item['msg']}{got_text}")
    return "\n".join(lines)


def params_from_dict(data: dict, source: str = "params") -> Params:
    """Validate a nested dict; raise ConfigError naming every bad key and what is wrong."""
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err)) from None


def load_params(path: str | Path = "params.yaml", overrides: dict | None = None) -> Params:
    """Read and validate a params.yaml; `overrides` ({"selection.budget": 50}) win over the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: parameter file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file (a parameter file is a YAML file)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8 YAML") from None
    try:
        data = yaml.load(text, Loader=_NoAliasLoader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err)[:2 * _MAX_SHOWN]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return params_from_dict(data, str(path))
