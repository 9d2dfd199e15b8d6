"""``python -m data_pipeline`` is ``ovi-data``."""
import sys

from data_pipeline.cli import main

sys.exit(main())
