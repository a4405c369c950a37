"""``lenet5 serve``: the draw-a-digit page and prediction API (:mod:`lenet5.serve.launch`)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("serve", help="web demo: draw a digit, watch LeNet-5 read it (and a JSON API)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="CKPT",
                   help="run directory or .safetensors file to serve (repeatable)")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="bundled model to serve (repeatable; default: every bundled model, the "
                        "default one first)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads per process (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port, each with its own copy of the models "
                        "(default: %(default)s; one per core serves the most requests per second)")
    p.add_argument("--idle-timeout", type=float, default=5.0, metavar="S",
                   help="close a connection that sends nothing for S seconds (default: %(default)s)")
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                   help="a request's headers must arrive within S seconds (default: %(default)s)")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                   help="a request's body must arrive within S seconds of its headers "
                        "(default: %(default)s)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (default: %(default)s)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from ..serve.launch import serve
    from ..serve.timeouts import Timeouts

    timeouts = Timeouts(idle=args.idle_timeout, header=args.header_timeout, body=args.body_timeout)
    return serve(args.checkpoint, args.model, host=args.host, port=args.port, threads=args.threads,
                 workers=args.workers, log_level=args.log_level, timeouts=timeouts)
