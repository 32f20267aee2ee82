"""``python -m redis_ckpt.cli``: the admin command line (see :mod:`redis_ckpt.cli`)."""

from . import main

main()
