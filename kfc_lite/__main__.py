import sys

from kfc_lite.cli import main

sys.exit(main())
