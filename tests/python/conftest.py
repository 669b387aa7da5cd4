import os
import sys

# Use the freshly built package from the build tree (make test sets PYTHONPATH the same way).
_build = os.environ.get("TESSERA_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
sys.path.insert(0, os.path.abspath(os.path.join(_build, "python")))
