"""``python -I -B -m enclave.runner '<limits json>'``: the runner child process."""

import sys

from enclave.runner.child import main

if __name__ == "__main__":
    main(sys.argv)
