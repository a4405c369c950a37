"""``lenet5 data download|info``."""

from __future__ import annotations

import json

from ..data.datasets import DATASETS, dataset_info, ensure_downloaded, missing_files


def register(sub) -> None:
    p = sub.add_parser("data", help="download and inspect MNIST / Fashion-MNIST")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    for name, func, help_ in (("download", cmd_download, "fetch missing files (checksummed)"),
                              ("info", cmd_info, "counts, class histogram, pixel stats, checksums")):
        q = dsub.add_parser(name, help=help_)
        q.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
        q.add_argument("--data-dir", help="data root (one folder per dataset); "
                       "default $LENET5_DATA_DIR, then the user cache dir")
        if name == "info":
            q.add_argument("--json", action="store_true", help="print JSON")
        else:
            q.add_argument("--quiet", action="store_true", help="no progress bar")
        q.set_defaults(func=func)


def cmd_download(args) -> int:
    missing = missing_files(args.dataset, args.data_dir)
    directory = ensure_downloaded(args.dataset, args.data_dir, progress=not args.quiet)
    info = dataset_info(args.dataset, args.data_dir)
    bad = [stem for stem, f in info["files"].items() if not f["verified"]]
    if bad:
        raise RuntimeError(f"{directory}: checksum mismatch for {', '.join(bad)}")
    what = f"downloaded {len(missing)} file(s)" if missing else "all files already present"
    print(f"{args.dataset}: {what}, checksums verified, in {directory}")
    return 0


def cmd_info(args) -> int:
    info = dataset_info(args.dataset, args.data_dir)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['dataset']} in {info['directory']}")
    for stem, f in info["files"].items():
        print(f"  {stem:<26} {'verified' if f['verified'] else 'CHECKSUM MISMATCH'}")
    for split, s in info["splits"].items():
        print(f"  {split:<5} {s['images']:>6} images  mean {s['pixel_mean']:.4f}  "
              f"std {s['pixel_std']:.4f}  classes {s['class_counts']}")
    return 0
