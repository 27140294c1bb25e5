"""`launch.main` with the test-only 'tiny_images' dataset registered (for subprocess tests)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import conftest  # noqa: E402,F401  registers tiny_images

from launch import main  # noqa: E402

if __name__ == "__main__":
  main.cli()
