import sys

from anomrec.cli import main

sys.exit(main())
