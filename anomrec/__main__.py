from anomrec.cli import main
import sys
sys.exit(main())
