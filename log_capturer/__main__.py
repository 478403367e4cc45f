"""``python -m log_capturer run -c config.yaml``."""

import sys

from .cli import main

sys.exit(main())
