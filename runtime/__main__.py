"""``python -m runtime detect|bench ...``."""

import sys

from .cli import main

sys.exit(main())
