"""The other classifiers of the paper's Fig. 9 (Section III-C), independent of any framework:
their option dataclasses, LeNet-1's and LeNet-4's connection tables, and their registry rows.

The registry (:mod:`lenet5.models`) registers :data:`FIG9_MODELS` and :data:`FIG9_VARIANTS`
as it does the LeNet-5 models; the torch modules live in :mod:`.lenet1`, :mod:`.lenet4`,
:mod:`.boosted` and :mod:`.baselines`. Where the paper leaves a size open, the choice is an
option here and is explained in docs/fig9.md. Standard library only (the registry must not
import torch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .spec import INIT_RULES

# LeNet-1 (LeCun et al. 1990, the 1998 paper's Section III-C-7): its H3 has 12 maps, each
# reading 2 of H2's 4 maps: every one of the 6 pairs twice. 12 x 2 = 24 kernels of 5x5.
LENET1_PAIRS = ((0, 1), (1, 2), (2, 3), (0, 3), (0, 2), (1, 3))
LENET1_C3: tuple[tuple[int, ...], ...] = LENET1_PAIRS + LENET1_PAIRS


def lenet4_c3(inputs: int) -> tuple[tuple[int, ...], ...]:
    """LeNet-4's C3: 16 maps over S2's 8: map m < 8 reads ``inputs`` consecutive maps from
    m on, map 8 + m reads maps m, m + 3, m + 6, ... (mod 8; stride 3 meets every map). S2 maps 2i and 2i+1
    subsample C1 map i, so a window of 2 reads both subsamplings of one C1 map."""
    first = [tuple(sorted({(m + s) % 8 for s in range(inputs)})) for m in range(8)]
    second = [tuple(sorted({(m + 3 * s) % 8 for s in range(inputs)})) for m in range(8)]
    return tuple(first + second)


def lenet4_c5(units: int, inputs: int) -> tuple[tuple[int, ...], ...]:
    """LeNet-4's 120-unit layer over S4's 16 maps: unit u reads ``inputs`` consecutive maps
    (cyclically) starting at map u mod 16; 16 means fully connected."""
    return tuple(tuple(sorted({(u + s) % 16 for s in range(inputs)})) for u in range(units))


@dataclass
class LeNet1Config:
    digit: int = 16  # the digit's box after downsampling from MNIST's 20x20 (16: as published)
    init: str = "sqrt-fanin"  # the 1998 fan-in rule (spec.init_range)

    def __post_init__(self) -> None:
        if self.init not in INIT_RULES:
            raise ValueError(f"init must be one of {', '.join(INIT_RULES)}; got {self.init!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LeNet4Config:
    c3_inputs: int = 4  # S2 maps each C3 map reads (8: full)
    c5_inputs: int = 5  # S4 maps each of the 120 units reads (16: full); docs/fig9.md
    init: str = "sqrt-fanin"

    def __post_init__(self) -> None:
        if self.init not in INIT_RULES:
            raise ValueError(f"init must be one of {', '.join(INIT_RULES)}; got {self.init!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LeNet4KNNConfig:
    c3_inputs: int = 4  # the LeNet-4 whose 120 features are classified
    c5_inputs: int = 5
    init: str = "sqrt-fanin"
    k: int = 3
    n_train: int = 60000  # stored feature vectors (set by the fit)

    def __post_init__(self) -> None:
        if self.init not in INIT_RULES:
            raise ValueError(f"init must be one of {', '.join(INIT_RULES)}; got {self.init!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BoostedConfig:
    c3_inputs: int = 4  # each member is a LeNet-4 with these options
    c5_inputs: int = 5
    init: str = "sqrt-fanin"
    exit_confidence: float = 0.995  # net 1's top probability at or above which nets 2, 3 are skipped

    def __post_init__(self) -> None:
        if self.init not in INIT_RULES:
            raise ValueError(f"init must be one of {', '.join(INIT_RULES)}; got {self.init!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LinearConfig:
    deslant: bool = False  # deslant the digit first (data/deslant.py)
    ridge: float = 1e-3  # the least-squares fit's ridge, times N (lenet5 compare: on validation)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class KNNConfig:
    k: int = 3
    deslant: bool = False
    n_train: int = 60000  # stored training patterns (set by the fit; the checkpoint holds them)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PCAQuadraticConfig:
    components: int = 40

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RBFNetworkConfig:
    units: int = 1000  # Gaussian units, units / 10 per class (k-means on that class)

    def __post_init__(self) -> None:
        if self.units % 10:
            raise ValueError(f"units must be a multiple of 10 (one group per class); got {self.units}")

    def to_dict(self) -> dict:
        return asdict(self)


BOXES = ("", "centre", "ink")  # MLPConfig.box


@dataclass
class MLPConfig:
    hidden: tuple[int, ...] = (300,)  # hidden layer widths
    input: int = 28  # 28: the 28x28 image; 20: resized to 20x20 (the deslanted 20x20-300-10)
    deslant: bool = False
    box: str = ""  # input < 28, not resized: "centre" of the 28x28 field; "ink": centred on
    # the ink's bounding box (MNIST's digit box); "": the field resized (docs/fig9.md)

    def __post_init__(self) -> None:
        if self.box not in BOXES:
            raise ValueError(f"box must be one of {', '.join(map(repr, BOXES))}; got {self.box!r}")
        self.hidden = tuple(int(h) for h in self.hidden)
        if not 1 <= len(self.hidden) <= 4:
            raise ValueError("hidden needs 1 to 4 widths")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


WIDTH = {"ge": 1, "le": 4096}
_FIG9 = dict(head="logits", normalization="paper", loss="ce")

# Rows for lenet5.models.ModelEntry (numpy: None; these train in PyTorch only).
FIG9_MODELS: list[dict] = [
    dict(name="lenet1", config=LeNet1Config, torch="lenet5.models.lenet1:LeNet1", numpy=None,
         limits={"digit": {"ge": 8, "le": 20}}, **_FIG9,
         description="LeNet-1 (1990): 16x16 digit, 4 and 12 maps, 10 outputs (Fig. 9: 1.7%)"),
    dict(name="lenet4", config=LeNet4Config, torch="lenet5.models.lenet4:LeNet4", numpy=None,
         limits={"c3_inputs": {"ge": 1, "le": 8}, "c5_inputs": {"ge": 1, "le": 16}}, **_FIG9,
         description="LeNet-4: 4, 8, 16, 16 maps, 120 units, 10 outputs (Fig. 9: 1.1%)"),
    dict(name="lenet4-knn", config=LeNet4KNNConfig, torch="lenet5.models.lenet4:LeNet4KNN",
         numpy=None, limits={"c3_inputs": {"ge": 1, "le": 8}, "c5_inputs": {"ge": 1, "le": 16},
                             "k": {"ge": 1, "le": 100}, "n_train": {"ge": 1, "le": 100_000}},
         **_FIG9, description="a trained LeNet-4's 120 features, classified by k-NN "
                              "(Fig. 9: 1.1%)"),
    dict(name="boosted-lenet4", config=BoostedConfig, torch="lenet5.models.boosted:BoostedLeNet4",
         numpy=None, limits={"c3_inputs": {"ge": 1, "le": 8}, "c5_inputs": {"ge": 1, "le": 16},
                             "exit_confidence": {"gt": 0.0, "le": 1.0}}, **_FIG9,
         description="three LeNet-4s, boosted, outputs added, early exit (Fig. 9: 0.7%)"),
    dict(name="linear", config=LinearConfig, torch="lenet5.models.baselines:Linear", numpy=None,
         **_FIG9, description="linear classifier on the 28x28 pixels (Fig. 9: 12.0%)"),
    dict(name="pairwise-linear", config=LinearConfig,
         torch="lenet5.models.baselines:PairwiseLinear", numpy=None, **_FIG9,
         description="45 pairwise linear units, class scores by votes (Fig. 9: 7.6% deslanted)"),
    dict(name="knn", config=KNNConfig, torch="lenet5.models.baselines:KNN", numpy=None,
         limits={"k": {"ge": 1, "le": 100}, "n_train": {"ge": 1, "le": 100_000}}, **_FIG9,
         description="k-nearest neighbours, Euclidean, on the pixels (Fig. 9: 5.0%)"),
    dict(name="pca-quadratic", config=PCAQuadraticConfig,
         torch="lenet5.models.baselines:PCAQuadratic", numpy=None,
         limits={"components": {"ge": 1, "le": 200}}, **_FIG9,
         description="40 principal components + quadratic classifier (Fig. 9: 3.3%)"),
    dict(name="rbf-network", config=RBFNetworkConfig,
         torch="lenet5.models.baselines:RBFNetwork", numpy=None,
         limits={"units": {"ge": 10, "le": 10_000}}, **_FIG9,
         description="1000 Gaussian RBF units (k-means per class) + linear (Fig. 9: 3.6%)"),
    dict(name="mlp", config=MLPConfig, torch="lenet5.models.baselines:MLP", numpy=None,
         limits={"hidden": WIDTH, "input": {"ge": 8, "le": 28}}, **_FIG9,
         description="fully connected net, tanh hidden units (Fig. 9: 28x28-300-10 4.7%)"),
]

# Keyword arguments of lenet5.models.variant: the Fig. 9 rows that are a model with options.
FIG9_VARIANTS: list[dict] = [
    dict(name="linear-deslant", base="linear", description="linear classifier, deslanted "
         "(Fig. 9: 8.4%)", deslant=True),
    dict(name="pairwise-linear-deslant", base="pairwise-linear", description="pairwise linear, "
         "deslanted (Fig. 9: 7.6%)", deslant=True),
    dict(name="knn-deslant", base="knn", description="3-NN Euclidean, deslanted (Fig. 9: 2.4%)",
         deslant=True),
    dict(name="mlp-300", base="mlp", description="28x28-300-10 (Fig. 9: 4.7%)", hidden=(300,)),
    dict(name="mlp-1000", base="mlp", description="28x28-1000-10 (Fig. 9: 4.5%)", hidden=(1000,)),
    dict(name="mlp-300-100", base="mlp", description="28x28-300-100-10 (Fig. 9: 3.05%)",
         hidden=(300, 100)),
    dict(name="mlp-500-150", base="mlp", description="28x28-500-150-10 (Fig. 9: 2.95%)",
         hidden=(500, 150)),
    dict(name="mlp-20x20-300-deslant", base="mlp", description="deslanted 20x20-300-10 "
         "(Fig. 9: 1.6%)", hidden=(300,), input=20, deslant=True),
    dict(name="mlp-box20-300-deslant", base="mlp", description="deslanted 20x20-300-10 on the "
         "digit's 20x20 box (Fig. 9: 1.6%)", hidden=(300,), input=20, deslant=True, box="ink"),
    dict(name="mlp-centre20-300-deslant", base="mlp", description="deslanted 20x20-300-10 on "
         "the central 20x20 of the field (Fig. 9: 1.6%)", hidden=(300,), input=20,
         deslant=True, box="centre"),
]
