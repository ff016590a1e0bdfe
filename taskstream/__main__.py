import sys

from taskstream.cli import main

sys.exit(main())
