"""``python -m redis_ckpt``: the main job (see ``redis_ckpt.demo``)."""

import sys

from .demo import main

sys.exit(main())
