"""What the models are, independent of any framework: configs, Table I, the Fig. 3 bitmaps,
the scaled tanh's constants, the 1998 fan-in table and the heads' score sign.

The PyTorch models (:mod:`.lenet5_1998`, :mod:`.modern`, :mod:`.bitmaps`) and the NumPy engine
(:mod:`lenet5.scratch`) both build from these definitions, so the two engines cannot drift
apart. This module imports nothing but the standard library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Table I (Section II-B): the S2 feature maps each of the 16 C3 maps reads. 60 pairs in all.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5),
)

# The squashing function of every 1998 layer but the output: f(a) = A tanh(S a) (Appendix A).
# A = 1.7159 and S = 2/3 make f(1) = 1 and f(-1) = -1, with the maximum of f'' at a = +-1.
TANH_A, TANH_S = 1.7159, 2.0 / 3.0

KERNEL = 5  # every 1998 convolution is 5x5


def table_fan_in(table=C3_TABLE) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """C3's fan-ins: ``(per kernel, per map)``. A map reading n S2 maps has F = 25 n weighted
    inputs; each of its n packed kernels (``c3.weight (60, 5, 5)``) shares that map's F."""
    per_map = tuple(KERNEL * KERNEL * float(len(ins)) for ins in table)
    per_kernel = tuple(per_map[o] for o, ins in enumerate(table) for _ in ins)
    return per_kernel, per_map


def fan_in_1998() -> dict[str, tuple]:
    """Layer -> ``(weight F, bias F)`` of LeNet-5 (1998), for the U[-r, r] draw of Appendix A.

    F counts the weighted inputs of a unit, not its bias: 25 for C1 (one 5x5 window), 4 for
    S2 and S4 (the coefficient sees a 2x2 window), 25 n for a C3 map reading n maps (Table I;
    tuples, per packed kernel and per map), 400 for C5 (16 maps x 25), 120 for F6.
    """
    c3_kernel, c3_map = table_fan_in(C3_TABLE)
    return {"c1": (25.0, 25.0), "s2": (4.0, 4.0), "c3": (c3_kernel, c3_map), "s4": (4.0, 4.0),
            "c5": (400.0, 400.0), "f6": (120.0, 120.0)}


HEADS = ("rbf", "logits")


def scores(out, head: str):
    """Higher is better, for either framework's arrays: the RBF head outputs distances to the
    class prototypes (smaller is better), so its scores are negated; logits are scores."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    return -out if head == "rbf" else out


# The RBF output's fixed prototypes: stylized 7x12 digit bitmaps (Fig. 3). Each row holds one
# pixel row of all ten digits, 0 to 9, separated by two spaces; ``#`` is ink (+1) and ``.`` is
# paper (-1). Read row by row they give the 84-vector w_i of class i. Transcribed from the
# figure as given in docs/lenet5-1998.md.
BITMAP_ROWS = (
    ".#####.  ...##..  .#####.  #######  .#####.  .#####.  ..####.  #######  .#####.  .#####.",
    ".......  ..###..  .......  .....##  .......  .......  .##....  .....##  ##...##  ##..###",
    "..###..  .####..  .#####.  ....##.  .......  #######  ##.....  .....##  ##...##  ##...##",
    ".##.##.  ...##..  ##...##  ...##..  .##..##  ##.....  ##.....  ....##.  ##...##  ##...##",
    "##...##  ...##..  #....##  ..####.  .##..##  ##.....  ######.  ...##..  .#####.  ##..###",
    "##...##  ...##..  ....##.  .....##  ###..##  .####..  ###..##  ...##..  ##...##  .######",
    "##...##  ...##..  ..###..  .....##  ##...##  ..####.  ##...##  ..##...  ##...##  .....##",
    "##...##  ...##..  .##....  .....##  ##...##  .....##  ##...##  ..##...  ##...##  .....##",
    ".##.##.  ...##..  ##.....  ##...##  ##..###  ##...##  ###..##  ..##...  ##...##  ....##.",
    "..###..  .######  #######  .#####.  .######  .#####.  .#####.  ..##...  .#####.  .####..",
    ".......  .......  .......  .......  .....##  .......  .......  .......  .......  .......",
    ".......  .......  .......  .......  .....##  .......  .......  .......  .......  .......",
)
WIDTH, HEIGHT = 7, 12


def bitmap_strings() -> list[list[str]]:
    """``[digit][row]`` -> the 7-character row of that digit's bitmap."""
    rows = [line.split() for line in BITMAP_ROWS]
    return [[row[d] for row in rows] for d in range(10)]


def prototype_values(kind: str = "bitmaps") -> list[list[float]]:
    """``[digit][unit]``: the RBF prototypes. ``bitmaps``: 10 lists of 84 values, ink +1 and
    paper -1, row-major over 12x7 (Fig. 3). ``onehot``: 10 lists of 10, +1 for the digit and
    -1 elsewhere: the targets of Bottou's Lush ``lenet5.lsh`` (MSE to +-1 over 10 outputs, no
    RBF layer), for which the distance to a prototype is that squared error."""
    if kind == "onehot":
        return [[1.0 if j == i else -1.0 for j in range(10)] for i in range(10)]
    if kind != "bitmaps":
        raise ValueError(f"prototypes must be one of {', '.join(PROTOTYPES)}; got {kind!r}")
    return [[1.0 if ch == "#" else -1.0 for row in digit for ch in row]
            for digit in bitmap_strings()]


PROTOTYPES = ("bitmaps", "onehot")
PROTOTYPE_WIDTH = {"bitmaps": WIDTH * HEIGHT, "onehot": 10}  # the F6 width each one needs


# Appendix A draws every weight from U[-r, r] with r = 2.4 / F (F = fan-in). Taken literally,
# the weighted sums shrink by sqrt(F) at every layer, the Gauss-Newton second derivatives vanish
# on the way down (h_kk ~ 1e-6 in C1), every early step sits at the ceiling eta/mu, and
# per-pattern SDLM at the paper's eta diverges (docs/results.md). The paper's stated reason for
# the rule ("the initial standard deviation of the weighted sums in the same range for each unit,
# and within the normal operating region of the sigmoid") and its pass-1 step range (7e-5 to
# 0.016) both match r = 2.4 / sqrt(F) instead, which is therefore the default.
# "lush": Lush's ``(forget 1 2)`` in ``lenet5.lsh`` (gblearn2; its C++ port eblearn's
# ``forget_param_linear(1, 0.5)``): U[-1/sqrt(F), 1/sqrt(F)], biases zero, and each
# subsampling coefficient set to 1/sqrt(4) = 0.5 (not drawn).
INIT_RULES = ("sqrt-fanin", "fanin", "lush")


def init_range(fan_in: float, rule: str) -> float:
    """Half-width r of the uniform initialisation for a unit with ``fan_in`` weighted inputs."""
    if rule == "fanin":
        return 2.4 / fan_in
    if rule == "sqrt-fanin":
        return 2.4 / fan_in**0.5
    if rule == "lush":
        return 1.0 / fan_in**0.5
    raise ValueError(f"init must be one of {', '.join(INIT_RULES)}; got {rule!r}")


@dataclass
class LeNet1998Config:
    """Open choices of the paper (README, "Paper choices")."""

    subsample: str = "average"  # "average": coef * mean of the 2x2 window | "sum": coef * sum
    init: str = "sqrt-fanin"  # "fanin": U[-2.4/F, 2.4/F] as printed; "sqrt-fanin": 2.4/sqrt(F)
    init_bias: str = "fanin"  # "fanin": drawn like the unit's weights | "zero"
    map_j: float = 0.1
    # The output: F6's width and the RBF's fixed prototypes. "bitmaps" (84, Fig. 3), or
    # "onehot" (10): Lush's lenet5 has no 84-unit layer; its last layer maps C5's 120 units to
    # 10 squashed outputs trained by MSE to +-1 targets (models.LUSH_OPTIONS).
    f6: int = 84
    prototypes: str = "bitmaps"

    def __post_init__(self) -> None:
        for name, allowed in (("subsample", ("sum", "average")), ("init", INIT_RULES),
                              ("init_bias", ("fanin", "zero")), ("prototypes", PROTOTYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.f6 != PROTOTYPE_WIDTH[self.prototypes]:
            raise ValueError(f"prototypes {self.prototypes} need f6 = "
                             f"{PROTOTYPE_WIDTH[self.prototypes]}, not {self.f6}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModernConfig:
    activation: str = "relu"  # "relu" | "tanh"
    pool: str = "max"  # "max" | "avg"
    batchnorm: bool = False
    dropout: float = 0.0  # before F6 and before the head
    widths: tuple[int, int, int, int] = (6, 16, 120, 84)  # C1, C3, C5, F6

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be relu or tanh, got {self.activation!r}")
        if self.pool not in ("max", "avg"):
            raise ValueError(f"pool must be max or avg, got {self.pool!r}")
        if len(self.widths) != 4:
            raise ValueError("widths needs four numbers: C1, C3, C5, F6")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d
