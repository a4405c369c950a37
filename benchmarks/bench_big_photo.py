"""What one large photo costs ``predict``: time and peak memory of reading a file and
preprocessing it, at the default working size (``load_image``'s ``work_pixels``, about a
megapixel) and at full size (``work_pixels=None``), each in a fresh process so peak memory is
its own. The photo: ``lenet5.data.photos``' hard-edged shadow (the costliest path) at
3000x4000, as PNG.

    python benchmarks/bench_big_photo.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import time

from common import RESULTS, child_json, machine_info, markdown_table, write_result


def child(data_dir: str, work: str) -> dict:
    from PIL import Image

    from lenet5.data.datasets import load_split
    from lenet5.data.photos import photo_page
    from lenet5.inference.images import load_image, preprocess

    x, _ = load_split("mnist", "test", data_dir)
    page = photo_page(x[0], "shadow", None).resize((3000, 4000), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    page.save(buf, "PNG")
    kw = {} if work == "default" else {"work_pixels": None}
    t = time.perf_counter()
    img = load_image(buf.getvalue(), **kw)
    preprocess(img)
    return {"seconds": time.perf_counter() - t, "worked_on": list(img.size),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("LENET5_DATA_DIR", "../shared/data"))
    ap.add_argument("--json", default=str(RESULTS / "big-photo.json"))
    ap.add_argument("--child", choices=["default", "full"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.data_dir, args.child)))
        return 0
    out = {work: child_json([sys.executable, __file__, "--child", work, "--data-dir",
                             args.data_dir]) for work in ("default", "full")}
    markdown_table(["read at", "worked on (px)", "seconds", "peak RSS (MB)"],
                   [[w, "x".join(map(str, r["worked_on"])), f"{r['seconds']:.2f}",
                     r["peak_rss_mb"]] for w, r in out.items()])
    print(f"full / default: {out['full']['seconds'] / out['default']['seconds']:.0f}x the time")
    write_result(args.json, {**machine_info(1), "photo": "shadow, 3000x4000 PNG", "results": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
