"""``lenet5 bundle RUN_DIR NAME``: ship a run's weights in the package, with a model card."""

from __future__ import annotations

from ..inference.bundle import make_bundle
from ..weights import WEIGHTS_DIR


def register(sub) -> None:
    p = sub.add_parser("bundle", help="(developers) copy a run's weights into the package with a model card")
    p.add_argument("run_dir", help="training run directory (or its checkpoint.safetensors)")
    p.add_argument("name", help="bundled model name, e.g. lenet5-modern or lenet5-1998")
    p.add_argument("--data-dir", help="data root for the test-set evaluation")
    p.add_argument("--command", dest="train_command",
                   help="the exact `lenet5 train ...` line that made the run (default: one "
                        "rebuilt from its config.json)")
    p.add_argument("--commit", help="git commit the run was trained at (default: HEAD now)")
    p.add_argument("--out-dir", default=str(WEIGHTS_DIR),
                   help="where to write (default: the installed package's weights, which needs --force)")
    p.add_argument("--force", action="store_true",
                   help="allow writing into the installed package's weights, replacing what ships")
    p.set_defaults(func=cmd_bundle)


def cmd_bundle(args) -> int:
    make_bundle(args.run_dir, args.name, args.data_dir, args.train_command, args.commit,
                args.out_dir, force=args.force)
    return 0
