"""`python -m ivlm_core.cli ...` = the `ivlm` console script."""

import sys

from ivlm_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
